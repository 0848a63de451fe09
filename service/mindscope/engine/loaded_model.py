"""A store entry in memory: the model, its input spec, its layer tables and the compiled
forward, activation and gradient functions every request calls, behind their batchers."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mindscope.engine.batching import (
    FORWARD_BATCHING,
    GRADIENT_BATCHING,
    BatchingConfig,
    DynamicBatcher,
    OnlineActivity,
)
from mindscope.engine.explain.admission import Admission
from mindscope.engine.layer_paths import (
    SEPARATOR,
    find_layer,
    graph_input,
    graph_output,
    graph_outputs,
    logit_model,
    logit_tensor,
    output_shape,
    spatial_layer_names,
    tap,
    weighted_layer_names,
)
from mindscope.engine.model_calls import BatchedGradients, BatchedLayerGradients, Compiled
from mindscope.engine.model_inputs import InputSpec
from mindscope.engine.saved_model import saved_model_parts
from mindscope.engine.store import ModelRef, ModelStore
from mindscope.errors import InitialWeightsMissing, InvalidInput, LayersUnavailable, UnknownClass, UnknownLayer


@dataclass(frozen=True)
class LayerInfo:
    index: int  # 1-based, as in "the activations after layer 3"
    name: str
    output_shape: tuple[int, ...]  # without the batch axis


SCORES = ("probability", "logit")


@dataclass
class LoadedModel:
    """A store entry in memory, with compiled forward, activation and gradient functions.

    Every function takes float32 (N, H, W, C) images in [0, 1] of the model's input shape; the
    model's own preprocessing (`InputSpec`) and, for a model that outputs logits, a softmax are
    part of the compiled functions, so callers see probabilities.
    """

    ref: ModelRef
    model: keras.Model
    metadata: dict[str, Any]
    initial_weights: dict[str, list[np.ndarray]] | None  # None: the entry has no initial weights
    forward_batching: BatchingConfig = FORWARD_BATCHING
    gradient_batching: BatchingConfig = GRADIENT_BATCHING
    # The network as the optimizer trained it, where serving folded BatchNorm into its kernels,
    # with its weights before training (`ModelStore.load_learned`); None when the served weights
    # are the learned ones.
    learned: tuple[keras.Model, dict[str, list[np.ndarray]] | None] | None = None
    layers: tuple[LayerInfo, ...] = field(init=False)
    gradients: BatchedGradients = field(init=False)
    extensions: dict[str, Any] = field(init=False, default_factory=dict)  # per-model state of other modules

    def __post_init__(self) -> None:
        self.input_spec = InputSpec.from_metadata(self.metadata)
        self.outputs_logits = self.metadata.get("output", "probabilities") == "logits"
        # A SavedModel's graph has no layers to tap; its variables, by group, have histograms.
        self.saved_model = saved_model_parts(self.model)
        layer_names = (
            self.metadata.get("activation_layers")
            or self.metadata.get("architecture", {}).get("layers")
            or spatial_layer_names(self.model)
        )
        self.layers = self._table(layer_names)
        if self.saved_model is not None:
            groups = self.saved_model.variables
            self.weight_layers = tuple(LayerInfo(i, name, ()) for i, name in enumerate(groups, start=1))
        else:
            self.weight_layers = self._table(
                self.metadata.get("architecture", {}).get("layers") or weighted_layer_names(self.model)
            )
        spec = tf.TensorSpec([None, *self.input_shape], tf.float32)
        self._forward = Compiled(self._probabilities, [spec])
        preprocess = self.input_spec.apply
        tapped = tap(self.model, layer_names) if layer_names else lambda images: []
        self._activations = Compiled(lambda images: tapped(preprocess(images)), [spec])
        self._logits = logit_model(self.model) if not self.outputs_logits else self.model
        rows = tf.TensorSpec([None], tf.int32)
        self._gradients = Compiled(self._target_gradients, [spec, rows, rows])
        # The common batch, probabilities only: no logits branch to compute or differentiate.
        self._probability_gradients = Compiled(self._gradients_of_probabilities, [spec, rows])
        # Concurrent requests share compiled calls: predictions with predictions, and the
        # gradient rows of every explanation in flight with each other.
        label = self.ref.label
        # One clock of online activity for all of the model's lanes: a job waits for a quiet moment on all.
        self.online_activity = OnlineActivity()
        activity = self.online_activity
        self.forward_batcher = DynamicBatcher(
            self.predict_now, self.forward_batching, f"{label}-forward", activity=activity
        )
        self.gradient_batcher = DynamicBatcher(
            self.gradients_now, self.gradient_batching, f"{label}-gradients", activity=activity
        )
        self.gradient_batcher.yields_to = self.forward_batcher  # predictions never queue behind explanations
        self.gradients = BatchedGradients(self.gradient_batcher)
        self.admission = Admission()  # whole explanations, priced before they run
        self._layer_batchers: dict[str, DynamicBatcher] = {}
        self._layer_lock = threading.Lock()
        self._initial: LoadedModel | None = None

    def _table(self, names: list[str]) -> tuple[LayerInfo, ...]:
        return layer_table(self.model, names)

    def _probabilities(self, images: tf.Tensor) -> tf.Tensor:
        outputs = self.model(self.input_spec.apply(images), training=False)
        return tf.nn.softmax(outputs) if self.outputs_logits else outputs

    @property
    def animation_layers(self) -> tuple[str, ...]:
        """The layers the GIF walks through: metadata's `animation_layers`, else the third, the one
        five eighths of the way, and the last activation layer (conv3, conv6 and conv9 of the
        All-CNN's nine)."""
        stored = self.metadata.get("animation_layers")
        if stored:
            return tuple(stored)
        self.require_layers("the animation through its layers")
        names = [info.name for info in self.layers]
        last = len(names) - 1
        return tuple(names[i] for i in sorted({min(2, last), last * 5 // 8, last}))

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.metadata["class_names"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        height, width, channels = self.metadata["input_shape"]
        return (height, width, channels)

    @property
    def scores(self) -> tuple[str, ...]:
        """What attributions can differentiate: the probability always, the logit where the model
        has one (it outputs logits, or its last layer is a separate softmax)."""
        return SCORES if self._logits is not None else SCORES[:1]

    def initial_model(self) -> LoadedModel:
        """The same network with its weights from before training, with compiled functions and
        batchers of its own (the model-randomization sanity check); built on first use."""
        if self.initial_weights is None:
            raise InitialWeightsMissing(
                f"{self.ref.label} has no weights from before training (its store entry holds no "
                "initial.weights.h5), so the sanity check has no untrained model to compare with; "
                "import the model with --initial-weights, or leave out evaluate=sanity",
                model=self.ref.label,
            )
        with self._layer_lock:
            if self._initial is None:
                untrained = keras.models.clone_model(self.model)
                for path, weights in self.initial_weights.items():
                    find_layer(untrained, path).set_weights(weights)
                self._initial = LoadedModel(
                    self.ref, untrained, self.metadata, None, self.forward_batching, self.gradient_batching
                )
            return self._initial

    def require_layers(self, needed_for: str) -> None:
        """404 saying why, when the model has no layers with a spatial output (a SavedModel's graph)."""
        if self.layers:
            return
        if self.saved_model is not None:
            raise LayersUnavailable(
                f"{self.ref.label} is a SavedModel: its graph has no layers to tap, so {needed_for} cannot be "
                "computed (prediction, the gradient methods on the input and weight histograms work); import the "
                "Keras model it was exported from (model.save('model.keras')) to see inside its layers; a SavedModel "
                "Keras 2 wrote with model.save(dir) is imported with its layers",
                model=self.ref.label,
                needs="layers with a spatial output",
            )
        raise LayersUnavailable(
            f"{self.ref.label} has no layer with a (height, width, channels) output, so {needed_for} cannot be "
            "computed",
            model=self.ref.label,
            needs="layers with a spatial output",
        )

    def layer_gradients(self, name: str, score: str = "probability") -> BatchedLayerGradients:
        """(images, targets) -> (layer `name`'s activations, d score[target] / d them, scores), batched
        across requests on a lane of the layer's own (Grad-CAM)."""
        self.require_layers("gradients with respect to a layer (Grad-CAM)")
        self.gradients_for(score)  # the same check of the score
        with self._layer_lock:
            batcher = self._layer_batchers.get(name)
            if batcher is None:
                mixed, probabilities = self._compile_layer_gradients(name)

                def run(images: np.ndarray, targets: np.ndarray, on_logit: np.ndarray) -> tuple[np.ndarray, ...]:
                    batch, rows = tf.convert_to_tensor(images), tf.convert_to_tensor(targets)
                    outputs = mixed(batch, rows, on_logit) if np.any(on_logit) else probabilities(batch, rows)
                    return tuple(out.numpy() for out in outputs)

                batcher = DynamicBatcher(
                    run, self.gradient_batching, f"{self.ref.label}-{name}-gradients", activity=self.online_activity
                )
                self._layer_batchers[name] = batcher
        return BatchedLayerGradients(batcher, score)

    def _compile_layer_gradients(self, name: str) -> tuple[Any, Any]:
        if SEPARATOR in name:
            outer = name.split(SEPARATOR, 1)[0]
            raise InvalidInput(
                f"{name} is inside the nested model {outer}; gradients with respect to a layer are taken on "
                f"layers of the outer model: use {outer} (the nested model's output) or another outer layer",
                layer=name,
            )
        logits = self.model.outputs[0] if self.outputs_logits else logit_tensor(self.model)
        raw = graph_outputs(self.model)[0] if logits is None else logits
        split = keras.Model(graph_input(self.model), [graph_output(self.model, name), raw])
        preprocess = self.input_spec.apply

        def layer_gradients(images: tf.Tensor, targets: tf.Tensor, on_logit: tf.Tensor) -> tuple[tf.Tensor, ...]:
            with tf.GradientTape() as tape:
                activations, outputs = split(preprocess(images), training=False)
                tape.watch(activations)
                scores = outputs if logits is None else tf.where(on_logit[:, None] > 0, outputs, tf.nn.softmax(outputs))
                selected = tf.gather(scores, targets, batch_dims=1)
            return activations, tape.gradient(selected, activations), scores

        def of_probabilities(images: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, ...]:
            with tf.GradientTape() as tape:
                activations, outputs = split(preprocess(images), training=False)
                tape.watch(activations)
                scores = outputs if logits is None else tf.nn.softmax(outputs)
                selected = tf.gather(scores, targets, batch_dims=1)
            return activations, tape.gradient(selected, activations), scores

        spec = tf.TensorSpec([None, *self.input_shape], tf.float32)
        rows = tf.TensorSpec([None], tf.int32)
        # Batches of probability rows only (the common case) skip the logits branch.
        return (
            Compiled(layer_gradients, [spec, rows, rows]),
            Compiled(of_probabilities, [spec, rows]),
        )

    def gradients_for(self, score: str) -> BatchedGradients:
        """The batched gradient function of `score` ("probability" or "logit")."""
        if score not in self.scores:
            raise InvalidInput(
                f"score={score!r} is not available for {self.ref.label}: its softmax is inside its last layer "
                "(e.g. Dense(activation='softmax')), so the model has no separate logits; use score=probability, "
                "or import the model with the softmax as its own layer (keras.layers.Softmax)",
                valid_scores=list(self.scores),
            )
        return self.gradients if score == "probability" else BatchedGradients(self.gradient_batcher, score)

    def _gradients_of_probabilities(self, images: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(images)
            scores = self._probabilities(images)
            selected = tf.gather(scores, targets, batch_dims=1)
        return tape.gradient(selected, images), scores

    def _target_gradients(
        self, images: tf.Tensor, targets: tf.Tensor, on_logit: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Per row, d score[target] / d image and the row's scores: probabilities, or logits where
        `on_logit` is 1."""
        with tf.GradientTape() as tape:
            tape.watch(images)
            if self._logits is None:
                scores = self._probabilities(images)
            else:
                logits = self._logits(self.input_spec.apply(images), training=False)
                scores = tf.where(on_logit[:, None] > 0, logits, tf.nn.softmax(logits))
            # Rows are independent (no batch statistics), so d(sum)/d(row) is each row's own gradient.
            selected = tf.gather(scores, targets, batch_dims=1)
        return tape.gradient(selected, images), scores

    def predict(self, images: np.ndarray) -> np.ndarray:
        """images: float32 (N, H, W, C) in [0, 1] -> probabilities float32 (N, classes), batched
        with concurrent callers."""
        (probabilities,) = self.forward_batcher.submit(np.asarray(images, np.float32))
        return probabilities

    async def predict_async(self, images: np.ndarray) -> np.ndarray:
        """`predict` for coroutines: the event loop serves others while the batch runs."""
        (probabilities,) = await self.forward_batcher.submit_async(np.asarray(images, np.float32))
        return probabilities

    def predict_now(self, images: np.ndarray) -> tuple[np.ndarray]:
        """One compiled forward call on exactly these images."""
        return (self._forward(tf.convert_to_tensor(images, tf.float32)).numpy(),)

    def activations(self, images: np.ndarray) -> list[np.ndarray]:
        """Outputs of every activation layer for float32 (N, H, W, C) images; each float32 (N, h, w, c)."""
        outputs = self._activations(tf.convert_to_tensor(images, tf.float32))
        return [out.numpy() for out in outputs]

    def gradients_now(
        self, images: np.ndarray, targets: np.ndarray, on_logit: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One compiled gradient call on exactly these rows (of the probability, or of the logit
        where `on_logit` is 1)."""
        targets = np.asarray(targets, np.int32)
        batch = tf.convert_to_tensor(images, tf.float32)
        if on_logit is None or not np.any(on_logit):
            grads, scores = self._probability_gradients(batch, tf.convert_to_tensor(targets))
        else:
            flags = np.asarray(on_logit, np.int32)
            grads, scores = self._gradients(batch, tf.convert_to_tensor(targets), tf.convert_to_tensor(flags))
        return grads.numpy(), scores.numpy()

    def layer(self, key: str) -> LayerInfo:
        """An activation layer (one with a spatial output) by exact name (`conv3`) or 1-based index (`3`)."""
        self.require_layers(f"layer {key}'s activations")
        return lookup_layer(self.layers, key, "with a spatial output")

    def weight_layer(self, key: str) -> LayerInfo:
        """A layer with weights by exact name or 1-based index among those layers."""
        return lookup_layer(self.weight_layers, key, "with weights")

    def target_for(self, image: np.ndarray, target: str | int | None) -> int:
        """The class to explain: `target` by index or name, or the predicted class of float32
        (H, W, C) `image`, from the forward lane (not behind the queue of gradient rows)."""
        if target is not None:
            return self.class_index(target)
        return int(np.argmax(self.predict(image[None])[0]))

    def class_index(self, target: str | int) -> int:
        names = self.class_names
        if isinstance(target, int) or target.lstrip("-").isdigit():
            index = int(target)
            if 0 <= index < len(names):
                return index
        elif target in names:
            return names.index(target)
        raise UnknownClass(
            f"no class {target!r}; give a class index 0-{len(names) - 1} or a class name",
            classes=list(names),
        )

    def close(self, wait: bool = True) -> None:
        """Stop every lane's thread (`wait`: until each has stopped); a caller still holding the
        model runs its calls in its own thread."""
        self.forward_batcher.close(wait)
        self.gradient_batcher.close(wait)
        with self._layer_lock:
            for batcher in self._layer_batchers.values():
                batcher.close(wait)
            if self._initial is not None:
                self._initial.close(wait)
        for extension in list(self.extensions.values()):
            if isinstance(extension, DynamicBatcher):  # e.g. a layer's embedding lane
                extension.close(wait)

    def warm_up(self) -> None:
        """Trace every compiled function once, and run the compiled calls once at the largest
        batch each lane forms, so the first request pays neither tracing nor first-use costs
        (allocations, kernels chosen per shape). The full-size calls bypass the batchers, whose
        measured rates would otherwise start from a first call's cost."""
        blank = np.zeros((1, *self.input_shape), np.float32)
        self.predict(blank)
        self.activations(blank)
        self.gradients(blank, np.zeros(1, np.int32))
        rows = self.gradient_batching.max_batch_rows
        self.gradients_now(np.zeros((rows, *self.input_shape), np.float32), np.zeros(rows, np.int32))
        if self._logits is not None:  # the logit rows' function too
            self.gradients_now(blank, np.zeros(1, np.int32), np.ones(1, np.int32))
        self.predict_now(np.zeros((self.forward_batching.max_batch_rows, *self.input_shape), np.float32))


def layer_table(model: keras.Model, names: list[str]) -> tuple[LayerInfo, ...]:
    """`names`, numbered from 1, with each layer's output shape in `model`."""
    return tuple(LayerInfo(i, name, tuple(output_shape(model, name))) for i, name in enumerate(names, start=1))


def lookup_layer(table: tuple[LayerInfo, ...], key: str, kind: str) -> LayerInfo:
    """The layer of `table` named `key` exactly or numbered `key`; UnknownLayer listing the table."""
    for info in table:
        if key == info.name or key == str(info.index):
            return info
    raise UnknownLayer(
        f"no layer {key!r} {kind}; use one of these names or its 1-based index",
        valid_layers=[info.name for info in table],
        valid_indices=[info.index for info in table],
    )


def load_model(
    store: ModelStore,
    ref: ModelRef,
    forward_batching: BatchingConfig | None = None,
    gradient_batching: BatchingConfig | None = None,
) -> LoadedModel:
    model, metadata = store.load(ref)
    return LoadedModel(
        ref,
        model,
        metadata,
        store.load_initial_weights(ref, model),
        forward_batching or FORWARD_BATCHING,
        gradient_batching or GRADIENT_BATCHING,
        store.load_learned(ref),
    )
