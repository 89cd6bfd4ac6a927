"""``--tl-report DIR``: the HTML page, from real tuning runs of TileLang kernels on target "c"."""

import base64
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest
from kernel_sources import KERNELS

INNER = '''
import pytest
import kernels


def gemm(M, N, K, bm=16, bn=16, bk=16, dtype="float32"):
    return kernels.gemm(M, N, K, bm, bn, bk, dtype, bug_when_bk=32)  # deliberate bug: bk == 32 is wrong


CONFIGS = [dict(bm=16, bn=16, bk=16), dict(bm=32, bn=32, bk=16), dict(bm=16, bn=16, bk=32)]
# No early stop: the tests count candidates that "passed", which a loaded runner must not change.
SETTINGS = dict(target="c", out_idx=[-1], ref_prog=lambda A, B: A @ B, warmup=2, rep=10, early_stop_factor=0)


@pytest.mark.autotune(configs=CONFIGS, **SETTINGS)
def test_gemm(autotune):
    autotune(gemm, 64, 64, 64)
'''

SECOND = '''

@pytest.mark.autotune(configs=CONFIGS[:2], **SETTINGS)
def test_gemm_tall(autotune):
    autotune(gemm, 128, 32, 64)
'''

HIDE_MATPLOTLIB = '''
import sys

sys.modules["matplotlib"] = None  # as if it were not installed: importing it raises ImportError
'''

CHOSEN_BAR_RGB = (0x2E, 0x9D, 0x4B)  # html_report's colour of the chosen config's bar
REFERENCE_RGB = (0x7A, 0x2B, 0xB5)  # and of the reference's line


def run_with_report(pytester, tmp_path, *args):
    report = tmp_path / "report"
    junit = tmp_path / "junit.xml"
    # "--opt=value": pytest takes a separate token naming an existing directory for a path when it picks the rootdir.
    result = pytester.runpytest(f"--tl-cache-dir={tmp_path / 'c'}", "-p", "no:cacheprovider",
                                f"--tl-report={report}", f"--junitxml={junit}", *args)
    return result, report / "index.html", junit


def chosen_configs(junit):
    """{test name: chosen config} from the tl_config property of the junit XML."""
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        for prop in case.iter("property"):
            if prop.get("name") == "tl_config":
                out[case.get("name")] = json.loads(prop.get("value"))
    return out


def shown_config(section):
    """The chosen config as the page shows it ("bm=16, bn=16, bk=16"), parsed back into a dict."""
    text = re.search(r"<th>chosen config</th><td><code>(.*?)</code>", section).group(1)
    return {k: json.loads(v) for k, v in (part.split("=", 1) for part in text.split(", "))}


def test_report_shows_each_test_its_choice_plot_and_failed_candidate(pytester, tmp_path):
    pytester.makepyfile(kernels=KERNELS, test_rep=INNER + SECOND)
    result, page, junit = run_with_report(pytester, tmp_path, "-n", "2")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"*HTML report: {page}*"])
    html = page.read_text()

    for name, config in chosen_configs(junit).items():
        section = html[html.index(f"<h2>test_rep.py::{name}</h2>"):]
        section = section[:section.index("</section>")]
        assert shown_config(section) == config
        assert config["bk"] == 16  # the buggy bk=32 config never wins
        assert re.search(r"<th>reference latency</th><td>[0-9.e-]+ ms</td>", section)
        assert "machine: " in section and "<th>cores</th>" in section

    # test_gemm's bk=32 candidate is marked with its status and reason, in the table and on the plot.
    gemm = html[html.index("<h2>test_rep.py::test_gemm</h2>"):html.index("<h2>test_rep.py::test_gemm_tall</h2>")]
    assert re.search(r"<code>bm=16, bn=16, bk=32</code></td><td class=\"status-bad\">mismatch</td>", gemm)
    assert "elements mismatch" in gemm
    assert "2 of 3 measured" in gemm

    plots = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(plots) == 2
    assert all(base64.b64decode(p).startswith(b"\x89PNG\r\n\x1a\n") for p in plots)
    assert "matplotlib is not installed" not in html
    # Self-contained: nothing is fetched when the page opens.
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", html)
    assert "<script" not in html and "<link" not in html


def junit_property(junit, test, name):
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.get("name") == test:
            return [p.get("value") for p in case.iter("property") if p.get("name") == name]
    return []


@pytest.mark.slow
def test_report_without_matplotlib_has_tables_note_and_gate(pytester, tmp_path):
    pytester.makeconftest(HIDE_MATPLOTLIB)
    pytester.makepyfile(kernels=KERNELS, test_rep=INNER)
    baseline = tmp_path / "baseline.json"
    result, _, _ = run_with_report(pytester, tmp_path, f"--tl-save-baseline={baseline}")
    result.assert_outcomes(passed=1)
    # Second run: a cache hit, re-measured and compared with the baseline by the gate.
    # The threshold is out of noise's reach on a loaded 2-core machine: this checks rendering.
    result, page, junit = run_with_report(pytester, tmp_path, f"--tl-baseline={baseline}",
                                          "--tl-max-regression=1000")
    result.assert_outcomes(passed=1)
    html = page.read_text()
    assert "matplotlib is not installed" in html
    assert "data:image/png" not in html
    assert shown_config(html) == chosen_configs(junit)["test_gemm"]
    assert '<td class="status-bad">mismatch</td>' in html
    gate = html[html.index("<h3>Gate</h3>"):]
    status = junit_property(junit, "test_gemm", "tl_gate")[0]
    assert re.search(rf"<th>verdict</th><td><span class=\"[a-z-]*\">{status}(: [a-z ]+)?</span>", gate)
    baseline_ms = float(junit_property(junit, "test_gemm", "tl_baseline_ms")[0])
    assert f"<th>baseline (median)</th><td>{baseline_ms:.4g} ms</td>" in gate
    # For people: labels and rounded numbers, no raw keys, JSON strings, nulls or float reprs.
    assert re.search(r"<th>smallest detectable change</th><td>±\d+\.\d %</td>", gate)
    assert re.search(r"<th>threshold</th><td>1000 %</td>", gate)
    assert "<th>output check</th><td>checked against ref_prog (or manual_check_prog)</td>" in html
    for raw in ("mdc_pct", "&#34;", ">null<", ">None<", "_ms<", "ci_level"):
        assert raw not in html, raw
    values = re.sub(r"<td class=reason>.*?</td>", "", html)  # a candidate's reason quotes its own numbers
    long = [n for n in re.findall(r"\d+\.\d+", values) if len(re.sub(r"^0+", "", n.replace(".", ""))) > 5]
    assert not long  # no unrounded float (9.365018773469608)


def find_chromium():
    for name in ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.slow
def test_report_renders_in_headless_chromium(pytester, tmp_path):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    image = pytest.importorskip("matplotlib.image")
    pytester.makepyfile(kernels=KERNELS, test_rep=INNER)
    result, page, _ = run_with_report(pytester, tmp_path)
    result.assert_outcomes(passed=1)

    shot = tmp_path / "shot.png"
    # A profile of its own: other chromium runs on this machine must not share its lock.
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1400", f"--screenshot={shot}",
         page.as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    pixels = image.imread(shot)  # floats in [0, 1], rows x columns x RGB(A)
    assert pixels.shape[:2] == (1400, 1280)
    # The chosen config's bar is drawn only inside the embedded PNG, so seeing its colour means it rendered.
    rgb = (pixels[..., :3] * 255).round()
    near = (abs(rgb - CHOSEN_BAR_RGB) <= 3).all(axis=-1)
    assert near.sum() > 500, "the plot's chosen bar is not on the screenshot"
    assert rgb.std() > 20  # not a blank page
    # The reference (torch, ~100x faster than these CPU kernels) is drawn where it can be seen: its
    # dashed line stands well right of where the bars start, not on the plot's left edge.
    bars_start = near.any(axis=0).nonzero()[0].min()
    ref_columns = (abs(rgb - REFERENCE_RGB) <= 8).all(axis=-1).sum(axis=0) > 40  # a vertical line, not text
    assert ref_columns.any(), "the reference line is not on the screenshot"
    assert ref_columns.nonzero()[0].min() - bars_start > 40
