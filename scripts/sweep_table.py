"""Print the table of a sweep (ablation rows or the distillation-weight sweep): `python scripts/sweep_table.py DIR`."""

import sys

from vamba.train.sweep import markdown_table, sweep_rows

if __name__ == "__main__":
    print(markdown_table(sweep_rows(sys.argv[1] if len(sys.argv) > 1 else "outputs/sweeps")))
