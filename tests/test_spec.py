"""The pipeline spec language, TOML files and presets: round trips, shapes, receptive fields, errors."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnx.base.errors import CnnxError
from cnnx.sources.pipeline import check, receptive_fields, run
from cnnx.sources.spec import (
    PIPELINE_PRESETS,
    SpecError,
    from_toml,
    load_pipeline,
    parse_spec,
    pipeline_text,
    preset,
    stage_text,
    to_toml,
)
from cnnx.sources.stages import Activation, Conv, GlobalAvgPool, Pipeline, Pool

FILTERS = [
    "sobel_x", "vertical_edge", "gaussian:sigma=0.7", "box:size=2", "dog:sigma=0.5", "laplacian", "sobel_y@",
    "prewitt_x>", "[[1,0,-1]]", "[[1],[2],[1]]", "random:3", "random:2:size=5", "identity",
]

convs = st.builds(
    Conv,
    st.lists(st.sampled_from(FILTERS), min_size=1, max_size=3, unique=True).map(tuple),
    padding=st.sampled_from(["same", "same", "valid", 0, 1, 2]),
    padding_mode=st.sampled_from(["zeros", "reflect", "replicate", "circular"]),
    dilation=st.sampled_from([1, 1, 2]),
    combine=st.sampled_from(["average", "depthwise"]),
    bias=st.sampled_from([0.0, 0.5, -1.25]),
    seed=st.integers(0, 3),
)
activations = st.one_of(
    st.sampled_from(["relu", "sigmoid", "tanh", "abs"]).map(Activation),
    st.sampled_from([0.01, 0.1, 0.25]).map(lambda slope: Activation("leaky_relu", slope)),
)
pools = st.builds(
    Pool, st.sampled_from(["max", "avg"]), st.integers(1, 3), st.sampled_from([None, 1, 2]), st.just(0)
)
stages = st.one_of(convs, activations, pools, st.just(GlobalAvgPool()))
pipelines = st.builds(
    Pipeline,
    st.lists(stages, min_size=1, max_size=5).map(tuple),
    st.booleans(),
    st.sampled_from(["correlation", "convolution"]),
)


@settings(max_examples=200, deadline=None)
@given(pipelines)
@pytest.mark.slow
def test_spec_and_toml_round_trip(pipeline):
    """spec -> pipeline -> TOML -> pipeline -> spec gives back the same pipeline and the same text."""
    text = pipeline_text(pipeline)
    again = Pipeline(parse_spec(text), pipeline.color, pipeline.convention)
    assert again == pipeline
    from_file = from_toml(to_toml(again))
    assert from_file == pipeline
    assert pipeline_text(from_file) == text


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pipelines, st.integers(1, 24), st.integers(1, 24))
def test_pipelines_run_with_predicted_shapes_or_are_refused_up_front(pipeline, height, width):
    """Every pipeline runs and gives exactly the shapes check() predicts, or check() refuses it naming a stage."""
    image = np.random.default_rng(height * 31 + width).random(
        (3 if pipeline.color else 1, height, width), dtype=np.float32
    )
    try:
        predicted = check(pipeline.stages, image.shape)
    except CnnxError as error:
        assert str(error).startswith("stage ")
        return
    results = run(image, pipeline)
    assert [r.shape for r in results[1:]] == predicted
    assert all(np.isfinite(r.array).all() for r in results)


def test_receptive_fields_hand_computed():
    """RF and jump: conv3 (3, 1) -> pool2 (4, 2) -> conv3 dilated 2 (4+2*2*2=12, 2) -> pool3 stride 2 (16, 4)."""
    stages = parse_spec("conv(sobel_x) -> maxpool(2) -> conv(sobel_x; dilation=2) -> maxpool(3, stride=2)")
    fields = receptive_fields(stages, (1, 64, 64))
    assert [rf[0] for rf, _ in fields] == [3, 4, 12, 16]
    assert [jump[0] for _, jump in fields] == [1, 2, 2, 4]


def test_receptive_field_of_strided_conv_and_global_pool():
    """A 5x5 conv at stride 3 sees 5 with jump 3; a following 3x3 sees 5 + 2*3 = 11; a global pool sees everything."""
    stages = parse_spec("conv(box:size=5; padding=0, stride=3) -> conv(box; padding=0) -> global_avgpool")
    fields = receptive_fields(stages, (1, 32, 20))
    assert fields[0] == ((5, 5), (3, 3))
    assert fields[1] == ((11, 11), (3, 3))
    rf, _ = fields[2]
    assert rf[0] >= 32 and rf[1] >= 20  # covers the whole 32x20 input


def test_rgb_toml_channel_counts(tmp_path):
    """The README's TOML example: depthwise on RGB gives 3 x 2 maps, averaged gives one per filter."""
    config = tmp_path / "pipeline.toml"
    config.write_text(
        'color = "rgb"\n\n'
        '[[stage]]\nop = "conv"\nfilters = ["sobel_x", "sobel_y"]\ncombine = "depthwise"\n\n'
        '[[stage]]\nop = "relu"\n\n'
        '[[stage]]\nop = "conv"\nfilters = ["gaussian:sigma=1", "laplacian", "box"]\n'
    )
    pipeline = load_pipeline(config=config)
    assert pipeline.color
    results = run(np.random.default_rng(0).random((3, 20, 30), dtype=np.float32), pipeline)
    assert [r.shape[0] for r in results] == [3, 6, 6, 3]
    assert results[1].labels[:3] == ("sobel_x of red", "sobel_x of green", "sobel_x of blue")


def test_convolution_convention_flips_kernels():
    """With convention=convolution the lesson's example gives [[1,-1],[1,3]] instead of [[-1,1],[-1,-3]]."""
    image = np.array([[[1, 2, 1, 0], [0, 1, 3, 2], [2, 1, 0, 1], [1, 0, 1, 2]]], np.float32)
    stages = parse_spec("conv(vertical_edge; padding=valid)")
    correlation = run(image, Pipeline(stages))[1].array
    convolution = run(image, Pipeline(stages, convention="convolution"))[1].array
    np.testing.assert_array_equal(correlation, [[[-1, 1], [-1, -3]]])
    np.testing.assert_array_equal(convolution, [[[1, -1], [1, 3]]])


def test_rotations_expand_into_a_bank():
    """sobel_x@ is 8 maps at 45 degree steps; prewitt_x> is 4 at 90."""
    image = np.random.default_rng(1).random((1, 9, 9), dtype=np.float32)
    results = run(image, parse_spec("conv(sobel_x@, prewitt_x>)"))
    assert results[1].shape[0] == 12
    assert results[1].labels[:3] == ("sobel_x@0", "sobel_x@45", "sobel_x@90")


def test_random_filters_are_seeded_he_initialised():
    """random:N draws the same filters for the same seed and other ones for another; their spread follows He."""
    image = np.random.default_rng(2).random((3, 40, 40), dtype=np.float32)
    a = Conv(("random:64",), seed=1).apply(image)
    assert np.array_equal(a, Conv(("random:64",), seed=1).apply(image))
    assert not np.array_equal(a, Conv(("random:64",), seed=2).apply(image))
    # He: weight variance 2 / fan_in with fan_in = 3 * 3 * 3; on a constant image the output is the weight sum.
    flat = Conv(("random:512",), padding="valid").apply(np.ones((3, 3, 3), np.float32))
    assert flat.std() == pytest.approx(np.sqrt(27 * 2 / 27), rel=0.1)


def test_weights_from_npz(tmp_path):
    """A .npz of (out, in, kH, kW) filters with a bias runs as one conv; wrong channel counts are refused up front."""
    weights = np.random.default_rng(3).standard_normal((5, 3, 3, 3)).astype(np.float32)
    bias = np.arange(5, dtype=np.float32)
    path = tmp_path / "layer1.npz"
    np.savez(path, weight=weights, bias=bias)
    stages = parse_spec(f"conv({path}; padding=valid)")
    image = np.random.default_rng(4).random((3, 8, 8), dtype=np.float32)
    results = run(image, Pipeline(stages, color=True))
    from cnnx.compute import ops

    np.testing.assert_allclose(results[1].array, ops.conv2d(image, weights, bias), rtol=1e-6)
    assert results[1].labels == tuple(f"layer1 #{o}" for o in range(5))
    with pytest.raises(CnnxError, match="stage 1, .* has filters for 3 input channels; this stage gets 1"):
        check(stages, (1, 8, 8))


def test_presets_parse_and_run():
    """Every preset parses, describes itself and runs on a small image."""
    image = np.random.default_rng(5).random((1, 64, 64), dtype=np.float32)
    for name, (description, _) in PIPELINE_PRESETS.items():
        assert description
        results = run(image, preset(name))
        assert len(results) == len(preset(name)) + 1
    assert stage_text(preset("edges")[0]) == "conv(sobel_x@; padding_mode=replicate)"
    with pytest.raises(CnnxError, match="did you mean edges"):
        preset("edge")


MALFORMED = [
    ("conv(sobel_x", 4, "never closed"),
    ("conv(sobelx) -> relu", 5, "unknown filter 'sobelx'"),
    ("relu -> maxpool(2", 15, "never closed"),
    ("conv(sobel_x; padding=2x)", 22, "expected a whole number"),
    ("relu ->", 7, "expected a stage"),
    ("maxpol(2)", 0, "unknown stage 'maxpol'; did you mean maxpool"),
    ("conv(sobel_x) relu", 13, "expected '->'"),
    ("maxpool(2, 3)", 11, "takes one value"),
    ("conv(sobel_x; strid=2)", 14, "conv takes padding"),
    ("relu(3)", 5, "relu takes no values"),
    ("conv(gaussian:sigma=0)", 5, "sigma must be from"),
    ("conv()", 0, "at least one filter"),
    ("conv(sobel_x]", 12, "unexpected ']'"),
    ("conv(sobel_x; padding=same, stride=2)", 0, "padding=same needs stride 1"),
    ("maxpool(0)", 8, "expected a number >= 1"),
    ("conv(sobel_x,, sobel_y)", 13, "expected a value"),
]


@pytest.mark.parametrize("spec, position, message", MALFORMED)
def test_syntax_errors_point_at_the_place(spec, position, message):
    """A malformed spec is a SpecError: the message, the spec, and a caret under the offending place."""
    with pytest.raises(SpecError) as error:
        parse_spec(spec)
    lines = str(error.value).splitlines()
    assert message in lines[0]
    assert lines[1] == "  " + spec
    assert lines[2] == "  " + " " * position + "^"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="conv()[]relumaxpool,;=-> 0123456789:_sobelx@.", max_size=40))
def test_fuzzed_specs_parse_or_fail_cleanly(text):
    """Any text either parses or raises CnnxError (with a caret when it is a syntax error); nothing else escapes."""
    try:
        parse_spec(text)
    except SpecError as error:
        assert str(error).splitlines()[-1].strip() == "^"
    except CnnxError:
        pass


@pytest.mark.parametrize(
    "toml, message",
    [
        ("[[stage]]\nop = 'conv'\n", "conv needs filters"),
        ("[[stage]]\nop = 'convolve'\n", "op must be one of"),
        ("[[stage]]\nop = 'relu'\nsize = 2\n", "relu takes no keys but op"),
        ("[[stage]]\nop = 'maxpool'\nsize = 'big'\n", "size has the wrong type"),
        ("color = 'blue'\n[[stage]]\nop = 'relu'\n", "color must be"),
        ("colour = 'rgb'\n", "unknown key 'colour'"),
        ("stage = [\n", "not valid TOML"),
        ("color = 'rgb'\n", "no stages"),
    ],
)
def test_bad_toml_names_file_stage_and_key(toml, message):
    """Mistakes in a pipeline file are CnnxErrors naming the file and what is wrong."""
    with pytest.raises(CnnxError, match=message) as error:
        from_toml(toml, "mine.toml")
    assert str(error.value).startswith("mine.toml: ")


def test_only_one_source_of_stages():
    """--spec, --config and --preset exclude each other."""
    with pytest.raises(CnnxError, match="only one of"):
        load_pipeline(spec="relu", preset_name="edges")


def test_a_random_filters_seed_is_always_printed_back():
    """conv(random:8; seed=0) keeps its seed in the table's text and --print-config's TOML: the filters are its
    draw, so the spec printed must make the same ones (the default seed included)."""
    from cnnx.sources.spec import parse_spec, stage_table, stage_text

    stage = parse_spec("conv(random:8; seed=0)")[0]
    assert stage_text(stage) == "conv(random:8; seed=0)" and stage_table(stage)["seed"] == 0
    assert parse_spec(stage_text(stage))[0] == stage
    assert stage_text(parse_spec("conv(sobel_x)")[0]) == "conv(sobel_x)"  # no random filter: no seed to say
