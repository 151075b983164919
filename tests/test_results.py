"""The results table printed at the end of a run: its columns follow the protocols that ran."""

from __future__ import annotations

from sslkit.run.results import knn_ks, results_table


def document(metrics, *, k=None, multilabel=False, baselines=None):
    protocol = {"multilabel": multilabel, "linear": {"label_fractions": [1.0]}}
    if k is not None:
        protocol["knn"] = {"k": k, "temperature": 0.07}
    return {
        "method": "SimCLR",
        "encoder": "student",
        "protocol": protocol,
        "metrics": metrics,
        "baselines": baselines or {},
        "timings": {"total_s": 12.0, "baselines": {}},
    }


def table_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()]


def test_knn_columns_follow_the_configured_k():
    metrics = {"knn/top1@10": 0.456, "linear/top1": 0.5, "linear/macro_f1": 0.25}
    raw = {"knn/top1@10": 0.1, "linear/top1": 0.2}
    text = results_table(document(metrics, k=[10], baselines={"raw_pixels": raw}), markdown=True)
    header, _, baseline, row = table_rows(text)
    assert header == ["encoder", "kNN@10", "linear top-1", "linear macro-F1", "wall time"]
    assert baseline == ["raw pixels", "10.0", "20.0", "-", "-"]
    assert row == ["SimCLR (student)", "45.6", "50.0", "25.0", "12 s"]


def test_knn_columns_of_multilabel_results_show_map_in_the_order_of_k():
    metrics = {"knn/mAP@50": 0.3, "knn/mAP@5": 0.4, "linear/mAP": 0.6, "linear/micro_f1": 0.7}
    text = results_table(document(metrics, k=[50, 5], multilabel=True), markdown=True)
    header, _, row = table_rows(text)
    assert header[1:3] == ["kNN@50 mAP", "kNN@5 mAP"]
    assert row[1:3] == ["30.0", "40.0"]


def test_results_without_knn_have_no_knn_column():
    text = results_table(document({"linear/top1": 0.5, "linear/macro_f1": 0.4}), markdown=True)
    assert not any(title.startswith("kNN") for title in table_rows(text)[0])


def test_knn_ks_come_from_the_metrics_when_the_protocol_does_not_list_them():
    old = document({"knn/top1@200": 0.5, "knn/top5@20": 0.9, "multiclip/knn/top1@7": 0.1})
    assert knn_ks([old, document({}, k=[20, 30])]) == [20, 200, 30]


def test_rankme_column_shows_the_effective_rank_as_it_is_for_each_row_that_has_it():
    metrics = {"knn/top1@10": 0.5, "linear/top1": 0.5, "linear/macro_f1": 0.4, "rankme": 12.345}
    baselines = {"raw_pixels": {"knn/top1@10": 0.1, "rankme": 250.0}, "random_init": {}}
    text = results_table(document(metrics, k=[10], baselines=baselines), markdown=True)
    header, _, raw, random, row = table_rows(text)
    assert header[-2:] == ["RankMe", "wall time"]
    assert (raw[-2], random[-2], row[-2]) == ("250.0", "-", "12.3")
    assert row[1] == "50.0"  # accuracies stay in %


def test_random_init_has_one_row_per_backbone_and_other_baselines_one_row():
    resnet = document({"linear/top1": 0.8}, baselines={"raw_pixels": {}, "random_init": {}})
    other = document({"linear/top1": 0.7}, baselines={"random_init": {"linear/top1": 0.6}})
    vit = document({"linear/top1": 0.9}, baselines={"raw_pixels": {}, "random_init": {}})
    resnet["backbone"], other["backbone"] = "sslkit.models.ResNet", "sslkit.models.ResNet"
    vit["backbone"] = "sslkit.models.vit.ViT"
    names = [
        row[0]
        for row in table_rows(results_table([resnet, other, vit], list("abc"), markdown=True))[2:]
    ]
    assert names == ["raw pixels", "random init (ResNet)", "random init (ViT)", "a", "b", "c"]
    # One backbone: the row keeps its plain name.
    names = [
        row[0] for row in table_rows(results_table([resnet, other], list("ab"), markdown=True))[2:]
    ]
    assert names == ["raw pixels", "random init", "a", "b"]
