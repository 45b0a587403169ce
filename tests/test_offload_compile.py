"""The IA3 forward under what wraps a model: hooks, accelerate offloading, torch.compile, threads.

The weight-folding fast path must never skip the base layer's hooks; dynamo must trace every IA3
layer without a graph break (one adapter or a mixed batch, forward and backward); the routing of
a mixed batch stays with the thread that set it.
"""

import threading

import pytest
import tiny_models
import torch
import torch._dynamo
from accelerate import dispatch_model, infer_auto_device_map
from accelerate.utils import compute_module_sizes
from torch import nn
from transformers import AutoModelForCausalLM

from ia3engine import IA3Config, get_ia3_model
from ia3engine.routing import RowRouting, current_routing, route_rows
from ia3engine.wrappers import wrap_layer

BIG = (64, 6)  # rows x features: enough rows that a Linear would fold the scales into W


def _linear_with_adapter():
    torch.manual_seed(0)
    layer = wrap_layer(nn.Linear(6, 5))
    layer.add_adapter("a", feedforward=False, init_ones=False)
    layer.active_adapters = ["a"]
    return layer


def _hook_forward(layer, calls):
    def hook(_module, _args, output):
        calls.append("forward")
        return output + 1.0

    return layer.register_forward_hook(hook)


def _hook_pre(layer, calls):
    def hook(_module, args):
        calls.append("pre")
        return (args[0] * 2.0,)

    return layer.register_forward_pre_hook(hook)


def _hook_global(_layer, calls):
    def hook(module, _args, output):
        if isinstance(module, nn.Linear):
            calls.append("global")
            return output + 1.0
        return output

    return nn.modules.module.register_module_forward_hook(hook)


@pytest.mark.parametrize("add_hook", [_hook_forward, _hook_pre, _hook_global])
def test_hooks_on_the_base_layer_run_and_count_in_inference(add_hook):
    layer = _linear_with_adapter()
    x = torch.randn(*BIG)
    vector = layer.ia3_l["a"].detach().flatten()
    calls: list[str] = []
    handle = add_hook(layer.base_layer, calls)
    try:
        with torch.no_grad():
            expected = layer.base_layer(x) * vector  # the hooked base layer, then the scale
            calls.clear()
            got = layer(x)
    finally:
        handle.remove()
    assert calls, "the base layer's hook did not run"
    torch.testing.assert_close(got, expected)


def test_a_forward_replaced_on_the_base_layer_instance_is_called():
    layer = _linear_with_adapter()
    x = torch.randn(*BIG)
    original = layer.base_layer.forward
    layer.base_layer.forward = lambda t: original(t) * 3.0  # what accelerate's hooks do
    with torch.no_grad():
        got = layer(x)
    expected = original(x).detach() * 3.0 * layer.ia3_l["a"].detach().flatten()
    torch.testing.assert_close(got, expected)


# ---- accelerate offloading on the CPU -------------------------------------------------------
def _llama_ia3(base=None):
    base = tiny_models.llama() if base is None else base
    torch.manual_seed(1)  # the same random vectors for every copy
    model = get_ia3_model(base, IA3Config(task_type="CAUSAL_LM", init_ia3_weights=False))
    model.add_adapter("b", IA3Config(task_type="CAUSAL_LM", init_ia3_weights=False))
    return model.eval()


def _offload_map(model: nn.Module) -> dict:
    """A device map that keeps about a third of `model` on the CPU and the rest on disk."""
    budget = compute_module_sizes(model)[""] // 3
    device_map = infer_auto_device_map(model, max_memory={"cpu": budget})
    assert "disk" in device_map.values(), device_map
    return device_map


def _outputs(model, ids) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {
            "single": model(input_ids=ids).logits,
            "mixed": model(input_ids=ids, adapter_names=["b", "default"]).logits,
        }


IDS = torch.randint(0, tiny_models.VOCAB, (2, 40), generator=torch.Generator().manual_seed(0))


def test_disk_offloaded_ia3_model_gives_the_same_output_as_no_offload(tmp_path):
    expected = _outputs(_llama_ia3(), IDS)
    model = _llama_ia3()
    dispatch_model(model.base_model, _offload_map(model.base_model), offload_dir=tmp_path)
    assert model.base_model.model.layers[1].self_attn.k_proj.base_layer.weight.is_meta
    got = _outputs(model, IDS)
    for case in expected:
        torch.testing.assert_close(got[case], expected[case], atol=1e-5, rtol=1e-5)


def test_adapters_added_to_a_base_loaded_with_disk_offload_give_the_same_output(tmp_path):
    expected = _outputs(_llama_ia3(), IDS)
    tiny_models.llama().save_pretrained(tmp_path / "base")
    device_map = _offload_map(tiny_models.llama())
    base = AutoModelForCausalLM.from_pretrained(
        tmp_path / "base", device_map=device_map, offload_folder=tmp_path / "offload"
    )
    model = _llama_ia3(base)
    layer = model.base_model.model.layers[1].self_attn.k_proj
    assert layer.base_layer.weight.is_meta and not layer.ia3_l["default"].is_meta
    got = _outputs(model, IDS)
    for case in expected:
        torch.testing.assert_close(got[case], expected[case], atol=1e-5, rtol=1e-5)


# ---- torch.compile ----------------------------------------------------------------------------
def _two_adapter_model(kind: str):
    """A tiny model with two random adapters (for BERT each with its own classifier copy)."""
    task = "CAUSAL_LM" if kind == "llama" else "SEQ_CLS"
    torch.manual_seed(2)
    model = get_ia3_model(getattr(tiny_models, kind)(), IA3Config(task_type=task))
    model.add_adapter("b", IA3Config(task_type=task, init_ia3_weights=False))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ia3_l.default" in name:
                param.uniform_(0.5, 1.5)
        if kind == "bert":
            model.base_model.classifier.modules_to_save["b"].weight.mul_(-2.0)
    return model.eval()  # eval: no dropout, so eager and compiled runs compare exactly


INPUTS = {"input_ids": torch.randint(0, tiny_models.VOCAB, (3, 8))}
ROUTINGS = {"single": None, "mixed": ["b", "__base__", "default"]}


def _run(model, routing, grad: bool):
    kwargs = {} if routing is None else {"adapter_names": routing}
    with torch.set_grad_enabled(grad):
        return model(**INPUTS, **kwargs).logits


@pytest.mark.parametrize(
    "kind, routing, grad",
    [
        ("llama", "single", True),
        ("llama", "mixed", True),
        ("bert", "single", True),
        ("bert", "mixed", True),  # the classifier's copies are routed too
        ("llama", "single", False),  # no grad: the folded fast path
        ("bert", "mixed", False),  # no grad: in-place scaling
    ],
)
def test_dynamo_traces_the_forward_without_graph_breaks(kind, routing, grad):
    model = _two_adapter_model(kind)
    if grad:
        model.set_adapter("default")  # trainable vectors, as in training
    torch._dynamo.reset()
    with torch.set_grad_enabled(grad):
        explained = torch._dynamo.explain(model)(**INPUTS, adapter_names=ROUTINGS[routing])
    reasons = [r.reason.splitlines()[0] for r in explained.break_reasons]
    assert explained.graph_break_count == 0, reasons
    assert explained.graph_count == 1


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind, routings", [("llama", ["single", "mixed"]), ("bert", ["mixed"])])
def test_fullgraph_compile_matches_eager_forward_and_backward(kind, routings):
    eager, compiled = _two_adapter_model(kind), _two_adapter_model(kind)
    for model in (eager, compiled):
        model.set_adapter("default")
    torch._dynamo.reset()
    fullgraph = torch.compile(compiled, fullgraph=True, backend="aot_eager")
    for routing in [ROUTINGS[r] for r in routings]:
        for model, runner in ((eager, eager), (compiled, fullgraph)):
            model.zero_grad(set_to_none=True)
            _run(runner, routing, grad=True).square().mean().backward()
        want, got = _grads(eager), _grads(compiled)
        assert want and want.keys() == got.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(
            _run(fullgraph, routing, grad=False), _run(eager, routing, grad=False)
        )


def test_a_compiled_base_serves_any_rows_of_the_same_adapters_from_one_graph():
    eager, compiled = _two_adapter_model("bert"), _two_adapter_model("bert")
    torch._dynamo.reset()
    compiled.base_model.compile(fullgraph=True, backend="aot_eager")
    first, second = ["b", "default", "b"], ["b", "b", "default"]  # same adapters, new rows
    torch.testing.assert_close(_run(compiled, first, False), _run(eager, first, False))
    # the routing is a tensor input of the graph: a new row pattern needs no new graph
    with torch._dynamo.config.patch(error_on_recompile=True):
        got = _run(compiled, second, False)
    torch.testing.assert_close(got, _run(eager, second, False))


# ---- threads --------------------------------------------------------------------------------
def test_each_thread_sees_only_its_own_routing():
    routings = {"one": RowRouting.from_names(["a", "b"]), "two": RowRouting.from_names(["c"])}
    inside = threading.Barrier(2)
    seen: dict[str, object] = {}

    def serve(name):
        with route_rows(routings[name]):
            inside.wait(timeout=10)  # both threads are inside their own route_rows now
            seen[name] = current_routing()
            inside.wait(timeout=10)
        seen[name + " after"] = current_routing()

    threads = [threading.Thread(target=serve, args=(n,)) for n in routings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert seen == {**routings, "one after": None, "two after": None}
    assert current_routing() is None


def test_threads_with_different_routings_get_their_own_rows_from_a_compiled_model():
    eager, compiled = _two_adapter_model("bert"), _two_adapter_model("bert")
    torch._dynamo.reset()
    compiled.base_model.compile(fullgraph=True, backend="aot_eager")
    cases = {"single": None, "mixed": ["b", "b", "default"], "other": ["b", "default", "b"]}
    for routing in cases.values():  # compile before the threads race
        _run(compiled, routing, grad=False)
    results: dict[str, list[torch.Tensor]] = {name: [] for name in cases}

    def serve(name):
        for _ in range(10):
            results[name].append(_run(compiled, cases[name], grad=False))

    threads = [threading.Thread(target=serve, args=(name,)) for name in cases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for name, routing in cases.items():
        expected = _run(eager, routing, grad=False)
        assert len(results[name]) == 10
        for got in results[name]:
            torch.testing.assert_close(got, expected)
