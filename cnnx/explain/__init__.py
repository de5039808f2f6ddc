"""The arithmetic of any value, as data, and its terminal views.  Imports the wings below: ``base``, ``compute``,
``io`` and ``sources``.

``lesson``: the lesson's steps window by window (a convolution of a small
matrix or an image patch, ReLU, pooling).  ``fields``: receptive fields,
shift tolerance and each stage's story.  ``values``: any value of any stage
of any source.  ``checks``: what they share.  ``views``: their terminal
pictures.  The names below are the explainer's public face.
"""

from cnnx.explain.checks import as_json, every_stage
from cnnx.explain.fields import FieldRow, ShiftExplanation, explain_field, shift_tolerance, stage_story
from cnnx.explain.lesson import (
    LESSON_INPUT,
    LESSON_KERNEL,
    LESSON_STATED_RESULT,
    LESSON_STATED_SUM,
    RELU_RANGE,
    ConvExplanation,
    PatchExplanation,
    PoolExplanation,
    ReluExplanation,
    explain_conv,
    explain_patch,
    explain_pool,
    explain_relu,
    explain_relu_image,
    lesson_input,
    parse_matrix,
)
from cnnx.explain.values import (
    LayerExplanation,
    ValueExplanation,
    explain_layer,
    explain_node,
    explain_stage,
    explain_value,
)

__all__ = [
    "LESSON_INPUT", "LESSON_KERNEL", "LESSON_STATED_RESULT", "LESSON_STATED_SUM", "RELU_RANGE", "ConvExplanation",
    "FieldRow",
    "LayerExplanation", "PatchExplanation", "PoolExplanation", "ReluExplanation", "ShiftExplanation",
    "ValueExplanation", "as_json", "every_stage", "explain_conv", "explain_field", "explain_layer", "explain_node",
    "explain_patch", "explain_pool", "explain_relu", "explain_relu_image", "explain_stage", "explain_value",
    "lesson_input", "parse_matrix", "shift_tolerance", "stage_story",
]
