"""Print the study table (Markdown) from the run folders that run_study.sh wrote.

python experiments/fashion_mnist/table.py outputs/fashion_mnist_study
"""

import json
import sys
from pathlib import Path

from sslkit.run.results import results_table

ROWS = [
    ("simclr", "SimCLR"),
    ("pairwise_views", "pairwise (views)"),
    ("pairwise_labels", "pairwise (labels)"),
    ("triplet_views", "triplet (views)"),
    ("triplet_labels", "triplet (labels)"),
    ("supervised", "supervised"),
    ("byol", "BYOL (student)"),
    ("byol_teacher", "BYOL (teacher)"),
    ("inpainting_patches", "inpainting (patches)"),
    ("inpainting_block", "inpainting (block)"),
]

root = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/fashion_mnist_study")
found = [(label, root / name / "results.json") for name, label in ROWS]
found = [(label, path) for label, path in found if path.is_file()]
documents = [json.loads(path.read_text()) for _, path in found]
print(results_table(documents, [label for label, _ in found], markdown=True))
