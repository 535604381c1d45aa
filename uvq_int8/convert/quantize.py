"""The recipes: a float32 .tflite in, a quantized .tflite out (ai-edge-quantizer).

Every quantizing recipe starts from the float32 file that ``convert`` wrote,
so each net goes through litert-torch once per build. The recipes themselves
(names, options, what each must leave in the file) are rows of
``uvq_int8.backends.RECIPES``; this module applies them. litert-torch's blockwise
INT4 recipe quantizes no convolution (``read_model_info`` on its output shows no
int4 convolution weight), so int4 uses ai-edge-quantizer's ``dynamic_wi4_afp32``;
static int8 calibrates frame by frame in profiler mode (``calibrate_per_frame``;
the build records its peak memory in the manifest) and averages the per-frame ranges.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Mapping


from uvq_int8.backends import RECIPES, Recipe
from uvq_int8.errors import UserError
from uvq_int8.util import quiet_fd2
from uvq_int8.runtime.tflite_info import ModelInfo

# Bump when a recipe's implementation changes the files it makes: the build
# then rebuilds those files even though checkpoints and options are unchanged.
# 2: static_wi8_ai8's activation ranges from tensor histograms (Int8Settings).
# 3: static_wi8_ai8's 1x1 convolutions refitted by least squares (uvq_int8.convert.refit).
# 4: that refit's ridge chosen per op by cross-validation over frames (refit "cv").
RECIPE_VERSION = 4


class QuantizationError(UserError):
    """A recipe failed, or produced a file in which nothing was quantized."""


def get_recipe(name: str) -> Recipe:
    """A recipe of the one table (uvq_int8.backends.RECIPES) that build can make."""
    try:
        return RECIPES[name]
    except KeyError:
        raise QuantizationError(f"uvq-int8 build cannot make recipe {name!r}; "
                                f"known recipes: {', '.join(RECIPES)}") from None


def recipe_options(name: str, calibration: Mapping[str, Any] | None = None,
                   int8: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The options recorded in the manifest; a file is rebuilt when they change.

    ``int8``: ``Int8Settings.as_options()``, for the full-integer recipe.
    """
    recipe = get_recipe(name)
    options: dict[str, Any] = {"recipe_version": RECIPE_VERSION, **recipe.options}
    if name == "static_wi8_ai8" and int8:
        options.update(int8)
    if recipe.calibrated:
        if calibration is None:
            raise ValueError(f"recipe {name} needs a calibration description")
        options["calibration"] = dict(calibration)
    return options


def quantizer_modules():
    os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is first imported
    try:
        from ai_edge_quantizer import calibrator, qtyping, quantizer, recipe, recipe_manager
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
    except ImportError:
        raise QuantizationError("ai-edge-quantizer is not installed: "
                                "pip install 'uvq-int8[build]'") from None
    return calibrator, qtyping, quantizer, recipe, recipe_manager, AlgorithmName


# Weight-range algorithms for the convolutions' weights (``weight_rules``): ai-edge-
# quantizer's min/max (its default), MSE and OCTAV. They change weight ranges only.
WEIGHT_ALGORITHMS = ("minmax", "MSE", "OCTAV")
_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")


def weight_rules(rules: list, algorithm: str, ops: tuple[str, ...] = _WEIGHT_OPS) -> list:
    """``rules`` (a recipe's list of op rules) with the convolutions' weight ranges from
    ``algorithm``, as per-op overrides. MSE registers only FC, EMBEDDING_LOOKUP and the
    convolutions, so as the default key it would leave ADD, MUL and LOGISTIC float."""
    import copy

    if algorithm not in WEIGHT_ALGORITHMS:
        raise ValueError(f"unknown weight algorithm {algorithm!r}; known: "
                         f"{', '.join(WEIGHT_ALGORITHMS)}")
    rules = list(rules)
    if algorithm == "minmax":
        return rules
    algorithms = quantizer_modules()[5]
    for op in ops:
        rule = copy.deepcopy(rules[0])
        rule.update(operation=op, algorithm_key=getattr(algorithms, algorithm).value)
        rules.append(rule)
    return rules


def _recipe_config(name: str, weight_algorithm: str = "minmax"):
    _, qtyping, _, recipe, _, algorithms = quantizer_modules()
    if name == "fp16_weights":
        from ai_edge_quantizer import recipe_manager

        manager = recipe_manager.RecipeManager()
        manager.add_weight_only_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, 16,
                                       algorithm_key=algorithms.FLOAT_CASTING)
        return manager.get_quantization_recipe()
    builders: dict[str, Callable[[], Any]] = {
        "dynamic_wi8_afp32": recipe.dynamic_wi8_afp32,
        "weight_only_wi8_afp32": recipe.weight_only_wi8_afp32,
        "dynamic_wi4_afp32": recipe.dynamic_wi4_afp32,
        "static_wi8_ai8": recipe.static_wi8_ai8,
    }
    # Dynamic int4 has no depthwise kernel in ai-edge-quantizer's policy: convolutions only.
    ops = ("CONV_2D",) if name == "dynamic_wi4_afp32" else _WEIGHT_OPS
    return weight_rules(builders[name](), weight_algorithm, ops)


def profiler_calibrator(float_model: bytes, threads: int = 2):
    """ai-edge-quantizer's calibrator in profiler mode (frame by frame, so memory does not
    grow with the frame count; the build records its peak RSS in the manifest),
    with the static int8 recipe loaded; returns (calibrator, recipe manager)."""
    calibrator, _, _, _, recipe_manager, _ = quantizer_modules()
    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(_recipe_config("static_wi8_ai8"))
    try:
        with quiet_fd2():
            calib = calibrator.Calibrator(
                bytes(float_model), num_threads=threads,
                mode=calibrator.CalibrationMode.CALIBRATION_PROFILER_BASED)
    except Exception as exc:
        raise QuantizationError(f"ai-edge-quantizer cannot calibrate this model: {exc}") from None
    return calib, manager


def quantize_model(recipe_name: str, float_model: bytes,
                   calibration_result: Mapping[str, Any] | None = None,
                   weight_algorithm: str = "minmax") -> bytes:
    """Apply a recipe to a float32 flatbuffer; returns the new flatbuffer.

    ``weight_algorithm`` sets the convolutions' weight ranges (``WEIGHT_ALGORITHMS``)."""
    recipe = get_recipe(recipe_name)
    if recipe.quantized_dtype is None:
        return bytes(float_model)
    if recipe.calibrated and calibration_result is None:
        raise ValueError(f"recipe {recipe_name} needs a calibration result")
    _, _, quantizer, _, _, _ = quantizer_modules()
    try:
        with quiet_fd2(), warnings.catch_warnings():
            # Its sufficiency check opens a debug interpreter and warns about that.
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
            q = quantizer.Quantizer(bytearray(float_model),
                                    _recipe_config(recipe_name, weight_algorithm))
            result = q.quantize(calibration_result=dict(calibration_result or {}) or None,
                                enable_progress_bar=False, enable_progress_report=False)
    except QuantizationError:
        raise
    except Exception as exc:
        raise QuantizationError(
            f"ai-edge-quantizer failed on recipe {recipe_name}: {exc}") from None
    return bytes(result.quantized_model)


def check_quantized(recipe_name: str, info: ModelInfo) -> None:
    """Refuse a "quantized" file in which the recipe quantized nothing."""
    recipe = get_recipe(recipe_name)
    dtype = recipe.quantized_dtype
    if dtype is None:
        if info.quantized_tensors:
            raise QuantizationError(f"a float32 file has quantized tensors: "
                                    f"{info.quantized_tensors_by_dtype}")
        return
    if info.quantized_tensors_by_dtype.get(dtype, 0) == 0:
        raise QuantizationError(
            f"recipe {recipe_name} quantized no tensor to {dtype} (quantized tensors: "
            f"{info.quantized_tensors_by_dtype or 'none'})")
    if info.conv_weights_by_dtype.get(dtype, 0) == 0:
        raise QuantizationError(f"recipe {recipe_name} left every convolution weight "
                                f"unquantized ({info.conv_weights_by_dtype})")
    if recipe.calibrated and not all(p.dtype == dtype and p.scale for p in info.inputs):
        raise QuantizationError(f"recipe {recipe_name} did not make the inputs {dtype}")
