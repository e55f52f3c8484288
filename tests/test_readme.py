"""
The README tells the truth where a test can check it: its two set-up commands
come first, every Python example is an excerpt of a file in docs/examples/
(which tests.test_examples runs), the fleet config it shows loads, and every
monitor option it names exists.
"""

from __future__ import annotations

import os
import re

from twisted.trial.unittest import SynchronousTestCase

from libvirt_twisted._monitorconfig import loadConfig
from libvirt_twisted._monitoroptions import Options

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(TOP, "README.rst")
EXAMPLE = re.compile(r"``(docs/examples/[\w.]+)``")


def blocks(text: str) -> list[tuple[str, str, str]]:
    """
    Each literal block of the reStructuredText C{text}: (what introduces it,
    the paragraph before it; its language, C{"python"} for a code-block, else
    C{""}; its text, dedented).
    """
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        python = line.strip() == ".. code-block:: python"
        if not (python or (line.endswith("::") and not line.startswith(".."))):
            continue
        start = i if not python else i - 1
        while start > 0 and lines[start - 1].strip():
            start -= 1
        intro = " ".join(lines[start : i + 1]) if not python else " ".join(lines[start:i])
        body = []
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or lines[j].startswith("    ")):
            body.append(lines[j][4:])
            j += 1
        found.append((intro, "python" if python else "", "\n".join(body).strip("\n")))
    return found


def sectionOf(text: str, title: str) -> str:
    """The body of the section whose heading starts with C{title}."""
    lines = text.splitlines()
    heads = [i for i in range(len(lines) - 1) if re.fullmatch(r"-{3,}", lines[i + 1])]
    (start,) = [i for i in heads if lines[i].startswith(title)]
    end = min([i for i in heads if i > start], default=len(lines))
    return "\n".join(lines[start + 2 : end])


def isExcerpt(block: str, source: str) -> bool:
    """Whether C{block}'s non-blank lines appear in C{source} in the same order."""
    wanted = [line.rstrip() for line in block.splitlines() if line.strip()]
    have = iter(line.rstrip() for line in source.splitlines())
    return all(any(line == other for other in have) for line in wanted)


class ReadmeTests(SynchronousTestCase):
    def setUp(self) -> None:
        with open(README, encoding="utf-8") as f:
            self.text = f.read()

    def test_validReStructuredText(self) -> None:
        """docutils (which pydoctor brings) reads it without a warning."""
        import docutils.core

        settings = {"report_level": 2, "halt_level": 2, "syntax_highlight": "none"}
        docutils.core.publish_string(self.text, writer_name="null", settings_overrides=settings)

    def test_setUpCommandsComeFirst(self) -> None:
        """The first block is the two commands: the monitor, then the suite."""
        first = blocks(self.text)[0][2]
        self.assertEqual(
            first.splitlines(), ["bash .ci/bootstrap monitor", "bash .ci/bootstrap test"]
        )

    def test_pythonExamplesAreRunExamples(self) -> None:
        """
        Each Python block is introduced by the example file it comes from,
        and is that file's lines (some left out), so that what the suite runs
        is what the README shows.
        """
        python = [(intro, body) for intro, language, body in blocks(self.text) if language]
        self.assertGreater(len(python), 4)
        for intro, body in python:
            named = EXAMPLE.findall(intro)
            self.assertTrue(named, f"no docs/examples/ file introduces:\n{body[:200]}")
            with open(os.path.join(TOP, named[-1]), encoding="utf-8") as f:
                source = f.read()
            self.assertTrue(isExcerpt(body, source), f"not an excerpt of {named[-1]}:\n{body}")

    def test_isExcerptRefusesWhatIsNotThere(self) -> None:
        source = "a = 1\nb = 2\nc = 3\n"
        self.assertTrue(isExcerpt("a = 1\n\nc = 3", source))
        self.assertFalse(isExcerpt("c = 3\na = 1", source))
        self.assertFalse(isExcerpt("a = 1\nd = 4", source))

    def test_fleetConfigLoads(self) -> None:
        """The fleet config shown loads, its password file put somewhere real."""
        (config,) = [body for _, _, body in blocks(self.text) if "[[host]]" in body]
        shown = re.search(r'password-file = "([^"]+)"', config)
        assert shown is not None
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "hv2.password"), "w") as f:
            f.write("secret\n")
        path = os.path.join(directory, "monitor.toml")
        with open(path, "w") as f:
            f.write(config.replace(shown[1], "hv2.password"))
        loaded = loadConfig(path, {})
        self.assertEqual(
            [(h.uri, h.readOnly, h.password) for h in loaded.hosts],
            [
                ("qemu:///system", False, None),
                ("qemu+tcp://hv2.example.com/system", True, "secret"),
            ],
        )
        self.assertEqual(loaded.format, "json")

    def test_monitorOptionsNamedExist(self) -> None:
        """Every --option of the monitor's section is one of the monitor's."""
        section = sectionOf(self.text, "The event monitor")
        named = set(re.findall(r"(?<![\w-])--([a-z][a-z-]*)", section))
        known = {opt[0] for opt in Options.optParameters + Options.optFlags}
        known |= {"uri", "list-events", "log-level", "help", "version"}
        self.assertGreater(len(named), 10)
        self.assertEqual(named - known, set())
