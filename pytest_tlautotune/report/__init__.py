"""What the user sees, from one row per ``autotune(...)`` call.

    rows.py      a call's row and its test properties (junit XML, across xdist)
    terminal.py  the one text-table helper, progress lines, the summary, the gate's table
    files.py     --tl-save-baseline, --tl-json, --tl-markdown
    html.py      --tl-report: the HTML page (a Jinja2 template) with a latency plot per test
"""

from ..model import QuarantineWarning

__all__ = ["QuarantineWarning"]
