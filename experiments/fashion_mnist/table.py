"""Print the study table (Markdown) from the run folders that run_study.sh wrote.

python experiments/fashion_mnist/table.py [study_dir]  (default: as run_study.sh)
"""

import json
import os
import sys
from pathlib import Path

from sslkit.run.results import results_table

ROWS = Path(__file__).with_name("rows.txt")


def rows(path: Path = ROWS) -> list[tuple[str, str]]:
    """``(run folder, label)`` of every row of the study, in rows.txt's order."""
    found = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, label, _ = (part.strip() for part in line.split("|", 2))
            found.append((name, label))
    return found


root = Path(
    sys.argv[1]
    if len(sys.argv) > 1
    else os.environ.get("SSLKIT_STUDY_DIR", Path.home() / "sslkit_runs" / "fashion_mnist_study")
)
found = [(label, root / name / "results.json") for name, label in rows()]
found = [(label, path) for label, path in found if path.is_file()]
documents = [json.loads(path.read_text()) for _, path in found]
print(results_table(documents, [label for label, _ in found], markdown=True))
