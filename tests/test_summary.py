"""Tests for jaxcal.models.summary: the table's shapes and parameter totals."""

import re

import jax
import numpy as np
import pytest
from flax import nnx

from jaxcal.models import MLP, LeNet5, ResNet18, parameter_count, summary


def _rows(table: str) -> dict[str, str]:
    """Table lines keyed by their path column (the first line of each row; "" is the model)."""
    rows = {}
    for line in table.splitlines():
        if line.startswith("│"):
            rows.setdefault(line.split("│")[1].strip(), line)
    return rows


def _table_total(table: str) -> int:
    """The Param column's footer: the number before the last parenthesised size."""
    footer = next(line for line in table.splitlines() if "Total" in line and "│" in line)
    return int(re.findall(r"([\d,]+) \(", footer)[-1].replace(",", ""))


def test_mlp_summary_has_the_notebook_counts_and_shapes():
    table = summary(MLP(rngs=nnx.Rngs(0)), (1, 28, 28, 1))
    assert _table_total(table) == 669_706
    assert "Parameters: 669,706 (nnx.Param)" in table
    assert "float32[1,28,28,1]" in table and "float32[1,512]" in table
    assert "float32[1,10]" in table
    assert "Total Parameters" not in table  # flax's own total mixes in BatchNorm statistics


def test_lenet_summary_lists_per_layer_output_shapes():
    model = LeNet5.lenet5_bn(rngs=nnx.Rngs(0))
    before = jax.tree.map(np.array, nnx.state(model))
    table = summary(model, (2, 32, 32, 3))  # model in train mode: summarised in eval mode
    rows = _rows(table)
    assert "float32[2,28,28,6]" in rows["conv1"]  # conv 3->6 k5: 32 -> 28
    assert "float32[2,10,10,16]" in rows["conv2"]  # after pool 14, conv k5 -> 10
    assert "float32[2,400]" in rows["fc1"] and "float32[2,120]" in rows["fc1"]
    assert "float32[2,1]" in rows["head"]
    assert _table_total(table) == parameter_count(model) == 61_263
    assert "BatchNorm statistics: 44" in table
    unchanged = jax.tree.map(np.array_equal, before, nnx.state(model))
    assert all(jax.tree.leaves(unchanged))
    assert not model.bn1.use_running_average  # the caller's mode is untouched


def test_resnet_summary_depth_and_totals():
    model = nnx.eval_shape(lambda: ResNet18(num_classes=1, rngs=nnx.Rngs(0)))  # no allocation
    table = summary(model, (1, 32, 32, 3), depth=2)
    rows = _rows(table)
    assert "float32[1,1]" in rows[""]  # the whole model: logits
    assert "float32[1,16,16,64]" in rows["conv1"]
    assert "float32[1,1,1,512]" in rows["layer4/1"]
    assert "layer4/1/conv1" not in rows  # deeper than depth 2
    assert _table_total(table) == 11_177_025


def test_summary_refuses_bad_arguments():
    model = MLP(rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="input_shape"):
        summary(model, (1, 0, 28, 1))
    with pytest.raises(ValueError, match="input_shape"):
        summary(model, ())
    with pytest.raises(ValueError, match="depth"):
        summary(model, (1, 784), depth=0)
    with pytest.raises(TypeError, match="model"):
        summary(lambda x: x, (1, 784))
