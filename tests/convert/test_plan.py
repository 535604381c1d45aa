"""What a build needs before any work (``convert.plan``)."""

from __future__ import annotations


import pytest

from uvq_int8 import convert

def test_require_build_tools_names_every_missing_module():
    with pytest.raises(convert.BuildError, match=r"torch, litert_torch.*pip install"):
        convert.require_build_tools(lambda name: None if name != "ai_edge_quantizer" else object())
    convert.require_build_tools(lambda name: object())

