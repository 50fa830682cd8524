"""The README's code example runs as written."""

import os
import re

import numpy as np

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def test_readme_example_runs_and_trains_only_params():
    with open(README) as handle:
        blocks = re.findall(r"```python\n(.*?)```", handle.read(), flags=re.DOTALL)
    assert len(blocks) == 1
    namespace = {}
    exec(compile(blocks[0], README, "exec"), namespace)
    assert "feedback" not in namespace["params"]
    moved = namespace["params"]["kernel"] - namespace["variables"]["params"]["kernel"]
    assert np.abs(np.asarray(moved)).max() > 0
