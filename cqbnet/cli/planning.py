"""``cqbnet pilot`` and ``cqbnet plan``: paper 000's pilot protocol and the plan for a budget."""

from __future__ import annotations

from pathlib import Path

from cqbnet.cli.common import (
    add_gt_args,
    at_least,
    cost_model,
    load_gt,
    resolve_device,
)
from cqbnet.engine.config import CONFIGS
from cqbnet.errors import InputError


def cmd_plan(args) -> int:
    from cqbnet.io import check_writable
    from cqbnet.planner.methods import is_method_pilot

    check_writable(args.out, folder=True)
    for name in ("plan.json", "pareto.png"):  # a folder in the way of a file it writes
        check_writable(args.out / name)
    if args.pilot is not None and is_method_pilot(args.pilot):
        return plan_methods(args)
    return plan_kinds(args)


def variable_shares(text: str | None, what: str) -> dict[str, float]:
    """``"full=0.1,B+I:boxes-tags-001=0.5"`` -> {variable: share}; ``full`` (or ``P``) names ``P:full``."""
    from cqbnet.planner.methods import FULL, parse_variable

    out: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, eq, value = part.rpartition("=")
        if not eq or not name.strip():
            raise InputError(f"{what} term {part.strip()!r} is not KINDS:METHOD=SHARE (or full=SHARE)")
        name = name.strip()
        var = FULL if name in ("full", "P") else parse_variable(name, f"{what}: ").name
        try:
            out[var] = float(value)
        except ValueError:
            raise InputError(f"{what}: share {value.strip()!r} for {name} is not a number") from None
        if not 0 <= out[var] <= 1:
            raise InputError(f"{what}: share of {name} must lie in [0, 1], got {value.strip()}")
    return out


def plan_methods(args) -> int:
    """``cqbnet plan`` from a pilot over label methods: shares of catalogue methods for the budget."""
    from cqbnet.io import write_json
    from cqbnet.labels.costs import CostModel
    from cqbnet.planner.methods import FULL, check_bounds, fit_pilot, load_method_pilot, make_method_plan
    from cqbnet.planner.plot import plot_method_plan
    from cqbnet.planner.search import parse_kinds

    pilot = load_method_pilot(args.pilot)
    lower = variable_shares(args.minimum, "--min")
    if args.min_full is not None:
        lower[FULL] = args.min_full
    upper = variable_shares(args.cap, "--cap")
    check_bounds(pilot.variables, lower, upper)  # before the model is fitted
    print(pilot.summary())
    print()
    costs = CostModel.from_yaml(args.costs or CONFIGS / "costs_content.yaml")
    if args.data or args.gt_json:
        from cqbnet.labels.simulate import dataset_stats

        measured = dataset_stats(load_gt(args), args.points_per_segment)
        costs.stats = {**costs.stats, **measured} if not args.costs else {**measured, **costs.stats}
    fitted = fit_pilot(pilot, args.combine, args.bootstrap, args.seed)
    model, mae = fitted.model, fitted.loo_mae
    print(model.describe())
    cells = len(fitted.loo[model.combine])
    print(f"leave-one-out over the pilot's {cells} cells: mean absolute error {mae:.2f} PQ")
    result = make_method_plan(
        model,
        costs,
        fitted.compute,
        budget=args.budget,
        compute_budget=args.compute_budget,
        quality_target=args.quality_target,
        lower=lower,
        upper=upper,
        unavailable=parse_kinds(args.unavailable, "--unavailable"),
        max_support=args.max_support,
        seed=args.seed,
        loo=mae,
    )
    print()
    print(costs.describe())
    print()
    print(result.table())
    write_json(args.out / "plan.json", result.to_json(), indent=2)
    plot_method_plan(result, args.out / "pareto.png", budget=args.budget)
    print(f"wrote {args.out / 'plan.json'} and {args.out / 'pareto.png'}")
    print(f"next: cqbnet labels simulate --plan {args.out / 'plan.json'} --data DIR --out LABELS; then cqbnet fit")
    return 0


def plan_kinds(args) -> int:
    """``cqbnet plan`` over label kinds: paper 000's model (its preset, or fitted from a Table 2 pilot)."""
    from cqbnet.io import write_json
    from cqbnet.labels.kinds import KINDS
    from cqbnet.planner.pilot_table import load_pilot_table, regression_samples
    from cqbnet.planner.plan import make_plan
    from cqbnet.planner.plot import plot_plan
    from cqbnet.planner.presets import PAPER_TABLE1, named_ratios, preset
    from cqbnet.planner.quality_model import fit_quality_model
    from cqbnet.planner.search import Constraints, parse_kinds, parse_shares

    costs = cost_model(args)
    gt = None
    if args.data or args.gt_json:
        from cqbnet.labels.simulate import dataset_stats

        gt = load_gt(args)
        costs.stats = {**dataset_stats(gt, args.points_per_segment), **costs.stats}
    named, paper = {}, {}
    if args.preset:
        model = preset(args.preset, args.objective)
        if args.thing_share is not None:
            model.thing_share = args.thing_share
        named = named_ratios(args.preset)
        paper = {n: {"pq_all": r[1], "f1": r[2], "f2": r[3]} for n, r in PAPER_TABLE1.items()}
    else:
        table = load_pilot_table(args.pilot)
        print(table.summary())
        print()
        share = args.thing_share
        if share is None and gt is not None:
            things = sum(c.isthing for c in gt.categories.values())
            share = things / len(gt.categories)
        notes: list[str] = []
        samples = regression_samples(table, notes=notes)
        for n in notes:
            print(f"note: {n}")
        model = fit_quality_model(
            samples,
            args.regressor,
            args.degree,
            args.bootstrap,
            args.seed,
            args.objective,
            share,
            source=f"fitted from {args.pilot}",
        )
    print(model.describe())
    unavailable = parse_kinds(args.unavailable, "--unavailable")
    lower = parse_shares(args.minimum, "--min")
    if args.min_full is not None:
        lower["P"] = args.min_full
    upper = parse_shares(args.cap, "--cap")
    for k in unavailable:
        if lower.get(k, 0) > 0:
            raise InputError(f"{k} is unavailable but has a minimum share of {lower[k]:g}")
    in_play = [k for k in KINDS if (k in model.kinds or lower.get(k, 0) > 0) and k not in unavailable]
    left_out = [k for k in KINDS if k not in in_play and k not in unavailable]
    if left_out:
        print(f"left out (no quality curve): {', '.join(left_out)}")
    constraints = Constraints(tuple(in_play), {k: v for k, v in lower.items() if k in in_play}, upper)
    result = make_plan(
        model,
        costs,
        constraints,
        budget=args.budget,
        quality_target=args.quality_target,
        method=args.search,
        samples=args.samples,
        seed=args.seed,
        population=args.population,
        named=named,
        named_paper=paper,
    )
    print()
    print(result.table())
    out = args.out
    write_json(out / "plan.json", result.to_json(), indent=2)
    plot_plan(result, out / "pareto.png", budget=args.budget)
    print(f"wrote {out / 'plan.json'} and {out / 'pareto.png'}")
    print(f"next: cqbnet labels simulate --plan {out / 'plan.json'} --data DIR --out LABELS")
    return 0


def cmd_pilot(args) -> int:
    from cqbnet.engine.config import load_config
    from cqbnet.planner.pilot_table import load_pilot_table
    from cqbnet.sweep.run_pilot import run_pilot

    cfg = load_config(args.config, args.overrides)
    if args.quick:
        from cqbnet.sweep.protocol import quick

        cfg["pilot"] = quick(cfg["pilot"])
    out = args.out or Path("runs") / Path(args.config).stem
    device = resolve_device(args.device)
    gpus = args.gpus_per_run if args.gpus_per_run is not None else (1.0 if device.startswith("cuda") else 0.0)
    table = run_pilot(cfg, out, args.table, args.address, args.cpus_per_run, gpus, device)
    print(load_pilot_table(table).summary())
    print(f"pilot table: {table}  (fit the planner with: cqbnet plan --pilot {table} ...)")
    return 0


def add_commands(sub) -> None:
    """This group's sub-commands."""
    pl = sub.add_parser("plan", help="which labels to buy: Pareto front of quality and cost, plan for a budget")
    src = pl.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", choices=["paper-coco", "paper-coco-literal"], help="paper 000's published model")
    src.add_argument(
        "--pilot",
        type=Path,
        help="pilot table (CSV) to fit the quality model from: paper 000's Table 2 (over kinds) or a pilot over "
        "label methods (a `variable` column; cqbnet.planner.methods)",
    )
    pl.add_argument("--regressor", choices=["poly", "monotone"], default="poly", help="curve form (Eq. 8: poly)")
    pl.add_argument("--degree", type=int, default=3, help="polynomial degree (default 3, as Eq. 8)")
    pl.add_argument("--bootstrap", type=at_least(0), default=200, help="bootstrap refits for the uncertainty of f1")
    pl.add_argument("--objective", choices=["product", "additive"], default="product", help="f1: Eq. 9 or a sum")
    pl.add_argument("--thing-share", type=float, help="r_th of Eq. 4 (default: from --data, or 80/133 for COCO)")
    pl.add_argument("--budget", type=float, help="recommend the best plan costing at most this (full = 1)")
    pl.add_argument("--quality-target", type=at_least(0.0, float), help="recommend the cheapest plan reaching this f1")
    pl.add_argument("--min-full", type=float, help="minimum share of fully labelled images (rho_P)")
    pl.add_argument(
        "--min", dest="minimum", help="minimum shares, e.g. P=0.1,S=0.05 (over methods: full=0.1,PT:points-crf=0.2)"
    )
    pl.add_argument("--cap", help="maximum shares, e.g. B=0.3,S=0.2 (over methods: B+I:boxes-tags-001=0.5)")
    pl.add_argument(
        "--combine",
        choices=["equivalent", "linear"],
        default="equivalent",
        help="over methods: how methods combine (equivalent full labels per image, or gains linear in share)",
    )
    pl.add_argument(
        "--compute-budget", type=at_least(0.0, float), help="over methods: at most this many training iterations"
    )
    pl.add_argument(
        "--max-support", type=at_least(1), default=3, help="over methods: at most this many methods in one plan"
    )
    pl.add_argument("--unavailable", help="kinds that cannot be bought, e.g. S,PT")
    pl.add_argument(
        "--search",
        choices=["random", "nsga2", "both"],
        default="random",
        help="random: paper 000's sampling; nsga2: pymoo's NSGA-II; both: the union",
    )
    pl.add_argument("--samples", type=int, default=7500, help="ratios to evaluate (default 7500, as the paper)")
    pl.add_argument("--population", type=at_least(2), default=100, help="NSGA-II population")
    pl.add_argument("--seed", type=at_least(0), default=0)
    pl.add_argument(
        "--costs",
        type=Path,
        help="YAML of relative costs, seconds or seconds per unit of content (over methods, default: "
        "configs/costs_content.yaml, from the literature, charged by the content --data measures)",
    )
    pl.add_argument(
        "--points-per-segment", type=at_least(1), default=1, help="clicks per segment, for the cost of points"
    )
    add_gt_args(pl)
    pl.add_argument("--out", type=Path, default=Path("plan"), help="folder for plan.json and pareto.png")
    pl.set_defaults(func=cmd_plan)

    pi = sub.add_parser(
        "pilot", help="paper 000's Table 2 protocol as Ray training runs, written to a pilot table for `plan`"
    )
    pi.add_argument(
        "config", type=Path, help="a training config with a pilot section, e.g. configs/synthetic_pilot.yaml"
    )
    pi.add_argument("overrides", nargs="*", help="section.key=value, e.g. pilot.seeds=[0]")
    pi.add_argument("--out", type=Path, help="output folder (default: runs/<config name>); runs go to OUT/runs/")
    pi.add_argument("--table", type=Path, help="pilot table to write (default: OUT/pilot.csv)")
    pi.add_argument("--address", help="Ray cluster address (default: start Ray on this machine)")
    pi.add_argument("--cpus-per-run", type=float, help="CPUs per run (default: all of this machine, 1 on a cluster)")
    pi.add_argument("--gpus-per-run", type=float, help="GPUs per run (default: 1 with a CUDA device, else 0)")
    pi.add_argument("--device", default="auto", help="cpu, cuda or auto")
    pi.add_argument(
        "--quick",
        action="store_true",
        help="over methods: one seed, each method alone and with 30%% full labels, full labels at 0.3 and 1",
    )
    pi.set_defaults(func=cmd_pilot)
