"""The README's "Use masklab in your own model" snippets run as written, and compute what they say."""

import re

import numpy as np
import pytest

from masklab import paths


def section_code(title: str) -> str:
    text = (paths.PROJ_ROOT / "README.md").read_text()
    start = text.index(f"## {title}")
    end = text.index("\n## ", start + 1)
    blocks = re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)
    assert blocks, f"no python blocks under '## {title}'"
    return "\n".join(blocks)


@pytest.mark.slow
def test_use_masklab_in_your_own_model_runs_as_written():
    namespace: dict = {}
    exec(compile(section_code("Use masklab in your own model"), "README.md", "exec"), namespace)
    assert namespace["probabilities"].shape == (256, 10)
    assert namespace["outputs"].shape == (3, 64, 10) and namespace["accuracy"].shape == (3,)
    assert namespace["two_layers"].shape == (3, 64, 10)
    # nothing ablated in row 0: the model's own predictions
    net, x = namespace["net"], namespace["x"]
    np.testing.assert_allclose(namespace["outputs"][0], net.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    assert len(namespace["per_unit"]) == 32 and namespace["selectivity"].shape == (32,)
    assert namespace["mean_ablated"][0] == 1.0
    routed = namespace["routed_probabilities"]
    assert routed.shape == (256, 10)
    np.testing.assert_allclose(routed.sum(-1), 1.0, rtol=1e-5)
