"""Builds spanwatch, with the span engine compiled by mypyc where it can be.

A rebuild spends most of its time in the engine's Python: walking parsed
payloads, matching events to spans, building the tree. mypyc compiles those
same typed modules to C extensions (the source stays the one to read and
test); the benchmark store's workers run about a fifth fewer instructions
(callgrind, 30 sessions: 927 -> 731 million).
Everything else stays Python. `SPANWATCH_PURE_PYTHON=1` installs without
compiling (also the fallback where no C compiler is found). An editable
install puts the compiled modules next to their sources, where they win the
import: `./dev` compiles again when one is older than its source, and the
test run stops if it finds one.
"""

from __future__ import annotations

import os
import shutil
import sysconfig

from setuptools import setup

#: The engine's modules, and the store's two that turn rows into events and
#: spans into rows, compiled together (they call one another natively).
COMPILED = [
    *(
        f"src/spanwatch/engine/{name}.py"
        for name in (
            "builder", "events", "payload", "records", "resume", "retire", "serde_numbers", "tree",
        )
    ),
    "src/spanwatch/store/events.py",
    "src/spanwatch/store/spans.py",
]  # fmt: skip


def ext_modules() -> list[object]:
    if os.environ.get("SPANWATCH_PURE_PYTHON") or not shutil.which(
        str(sysconfig.get_config_var("CC") or "cc").split()[0]
    ):
        return []
    from mypyc.build import mypycify  # noqa: PLC0415 (only where a C compiler builds)

    return list(mypycify(COMPILED, opt_level="3"))


setup(ext_modules=ext_modules())
