"""Print the study table (Markdown) from the run folders that run_study.sh wrote.

python experiments/fashion_mnist/table.py outputs/fashion_mnist_study
"""

import json
import sys
from pathlib import Path

from sslkit.run.results import results_table



def rows(path: Path = Path(__file__).with_name("rows.txt")) -> list[tuple[str, str]]:
    """``(run folder, label)`` of every row of the study, in rows.txt's order."""
    found = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, label, _ = (part.strip() for part in line.split("|", 2))
            found.append((name, label))
    return found


root = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/fashion_mnist_study")
found = [(label, root / name / "results.json") for name, label in rows()]
found = [(label, path) for label, path in found if path.is_file()]
documents = [json.loads(path.read_text()) for _, path in found]
print(results_table(documents, [label for label, _ in found], markdown=True))
