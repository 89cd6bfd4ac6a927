"""Shared pieces for the plugin's tests: a real TileLang CPU kernel module for inner runs."""

import json
import xml.etree.ElementTree as ET

import pytest
from kernel_sources import KERNELS


@pytest.fixture
def tl(pytester, tmp_path):
    """A pytester with the kernel module written and a fresh cache dir; returns a runner."""
    pytester.makepyfile(kernels=KERNELS)
    cache = tmp_path / "tlcache"

    class Runner:
        cache_dir = cache
        junit = tmp_path / "junit.xml"

        def run(self, *args, subprocess=False):
            argv = [f"--tl-cache-dir={cache}", "-p", "no:cacheprovider", f"--junitxml={self.junit}", *args]
            if subprocess:
                return pytester.runpytest_subprocess(*argv)
            return pytester.runpytest(*argv)

        def properties(self):
            """{test name: [(property, value), ...]} from the last junit XML."""
            root = ET.parse(self.junit).getroot()
            out = {}
            for case in root.iter("testcase"):
                out.setdefault(case.get("name"), []).extend(
                    (p.get("name"), p.get("value")) for p in case.iter("property"))
            return out

        def prop(self, test, name):
            return [v for k, v in self.properties()[test] if k == name]

    return Runner()


def load_json(path):
    with open(path) as f:
        return json.load(f)
