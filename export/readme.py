"""The short README that travels in every bundle, written for hardware teams."""
from __future__ import annotations

from models.flow import KirchhoffNet
from models.hardware import projected_latency_s

from .onnx_graphs import graph_steps
from .spice_ir import num


def bundle_readme(model: KirchhoffNet, digest: str, files: list[tuple[str, str]]) -> bytes:
    """Markdown text naming every file of the bundle, the constants and how to run things."""
    spec, hw = model.spec, model.spec.hardware
    d = spec.data_dim
    names = dict(files)
    listing = "\n".join(f"- `{fname}` ({kind})" for kind, fname in files)
    layers = "\n".join(
        f"| {l} | {num(t0 * hw.tau_s)} | {num(t1 * hw.tau_s)} | {layer.nodes} | {len(layer.edges)} |"
        for l, (layer, (t0, t1)) in enumerate(zip(spec.layers, spec.layer_bounds)))
    sample = names.get("netlist-sample", f"{spec.name}-sample.cir")
    text = f"""# KirchhoffNet `{spec.name}` (version {spec.version}): hardware bundle

Content SHA-256 of the model: `{digest}`. `manifest.json` lists the SHA-256 of every file
(`sha256sum -c` style check: compare each `sha256` field with `sha256sum FILE`).

## The circuit
{spec.num_edges} two-terminal devices (`{spec.device}`) on {d} data nodes plus ground, in
{len(spec.layers)} time-gated layers. Every node has a capacitor to ground; device current
I = I0·act(a·V_src + b·V_dst + c) flows from the source node to the destination node.

| constant | value |
| --- | --- |
| node capacitance C | {num(hw.capacitance_f)} F |
| voltage scale V0 | {num(hw.voltage_scale_v)} V |
| current scale I0 | {num(hw.current_scale_a)} A |
| time unit τ = C·V0/I0 | {num(hw.tau_s)} s |
| total evolution T·τ | {num(spec.end_time * hw.tau_s)} s |
| DAC set-up + ADC read-out | {num(hw.dac_setup_s)} s + {num(hw.adc_readout_s)} s |
| projected latency per inference | {num(projected_latency_s(spec))} s |

| layer | active from (s) | until (s) | nodes | devices |
| --- | --- | --- | --- | --- |
{layers}

Switches connect the devices of layer l only during its window; nodes keep their charge
across a switch.

## Files
{listing}
- `manifest.json` (constants, units, versions, checksums)

## Netlists (ngspice)
`ngspice -b {sample}` prints `v1 … v{d}` (volts) at T·τ. Inputs are the `.param in1 … in{d}`
values (model units; the initial node voltage is V0·in_k): edit them for another input.
The logprob netlist adds node `nacc`, whose voltage at T·τ is V0·log q(x) (it starts at
V0·log N(z) and integrates the closed-form divergence currents `BD_*`). The reverse netlist
maps a data point back to the latent (currents negated, layers in reverse order) and its
node `nlogp` reads V0·log p(x). Names: `n<k>` node k, `C_N<k>` its capacitor, `B_L<l>_E<e>`
device e of layer l (0-based, the rows of the parameter table), `V_G<l>` the switch
control of layer l (1 V while connected; device currents are multiplied by it). Tolerances are set for ~1e-6 relative
accuracy; they scale with C, V0, I0.

## Parameter tables
`*-params.csv` / `*-params.json`: one row per device (layer, time window in seconds, edge,
element name, source, destination, device family, parameters in physical units: a, b in
1/V, c dimensionless, I0 in A; conductances in S). `*-params.safetensors` holds the edge
lists and the raw and physical parameters as tensors.

## ONNX graphs (digital reference)
Float32, dynamic batch. `{spec.name}-sample.onnx`: input `z` (batch, {d}) → `x`, `logq`.
`{spec.name}-logprob.onnx`: input `x` → `z`, `logp`. Fixed-step RK4 with
{", ".join(str(s) for s in graph_steps(model))} steps per layer (metadata
`knet.steps_per_layer`). Example: `onnxruntime.InferenceSession(path).run(None, {{"z": z}})`.
"""
    return text.encode()
