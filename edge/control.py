"""What the I/O side (web API, OPC UA server, sinks) may see and change of a running service.

`ServiceContext` is handed to sinks (`bind(ctx)`) and components: the I/O loop, the read model,
verdict subscription and `ServiceControl`, the only way to change the running station:
- mode: halt / resume / single n frames (while halted every frame still gets a verdict:
  FAILSAFE `halted`);
- the decision rules: validated against the model's classes, compiled, swapped atomically
  between frames, every change reported to `on_change` listeners (the audit) and revertible;
- recipes (model + decision rules named in the config): loaded off the hot path, swapped in
  between frames, the old engine closed after;
- decision sets (named threshold sets of the config, the top-level rules as `default`): applied
  through the same path as any decision change. The active set's name is honest about what is
  in force: `custom` after a change that matches no set, `recipe:<name>` for a recipe's own rules.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from edge.config import LoadedConfig
from edge.decision import CompiledRules, DecisionConfig, compile_rules
from edge.errors import ConfigError
from edge.ioloop import IoLoop

if TYPE_CHECKING:
    from edge.emitter import Subscription, VerdictListener
    from edge.inspector import Inspector
    from edge.pipeline import Pipeline
    from edge.snapshot import ServiceSnapshot

log = logging.getLogger(__name__)

# fn(kind, before, after, who): kind is "mode", "decision" or "recipe"
ChangeListener = Callable[[str, Any, Any, str], None]
# (model file, decision rules, references) -> a loaded inspector for them and its compiled rules
RecipeLoader = Callable[[str, DecisionConfig, dict[str, np.ndarray]], "tuple[Inspector, CompiledRules]"]


class ServiceControl:
    def __init__(
        self,
        cfg: LoadedConfig,
        pipeline: Pipeline,
        load_recipe: RecipeLoader,
        rules: CompiledRules,
        references: dict[str, np.ndarray],
    ) -> None:
        self.cfg = cfg
        self.pipeline = pipeline
        self._load_recipe = load_recipe
        self._decision = cfg.app.decision
        self._rules = rules
        self._history: list[tuple[DecisionConfig, str]] = []  # (rules, their set name) before each change
        self._references = references
        self._recipe = "default"
        self._set = "default"
        self._lock = threading.Lock()  # one change at a time
        self._listeners: list[ChangeListener] = []
        info = pipeline.inspector.info
        for name, section in cfg.app.decision_sets.items():  # refused at start, as the top-level rules are
            try:
                compile_rules(section, info.names, Path(info.path), cfg.base_dir)
            except ConfigError as exc:
                raise ConfigError(f"decision_sets.{name}: {exc}") from exc

    # -- change listeners (the audit) ----------------------------------------------------------
    def on_change(self, fn: ChangeListener) -> None:
        self._listeners.append(fn)

    def _changed(self, kind: str, before: Any, after: Any, who: str) -> None:
        log.info("%s changed by %s", kind, who)
        for fn in list(self._listeners):
            try:
                fn(kind, before, after, who)
            except Exception:
                log.exception("change listener failed for %s", kind)

    # -- mode -----------------------------------------------------------------------------------
    def mode(self) -> str:
        return self.pipeline.mode()

    def halt(self, who: str = "system") -> None:
        self._set_mode("halted", 1, who)

    def resume(self, who: str = "system") -> None:
        self._set_mode("running", 1, who)

    def single(self, n: int = 1, who: str = "system") -> None:
        if n < 1:
            raise ConfigError("single: n must be at least 1")
        self._set_mode("single", n, who)

    def _set_mode(self, mode: str, n: int, who: str) -> None:
        with self._lock:
            before = self.pipeline.mode()
            self.pipeline.set_mode(mode, n)
        self._changed("mode", before, mode if mode != "single" else f"single:{n}", who)

    # -- decision rules -----------------------------------------------------------------------------
    def decision(self) -> dict[str, Any]:
        return self._decision.model_dump(mode="json")

    def rules(self) -> CompiledRules:
        return self._rules

    def set_decision(self, section: dict[str, Any] | DecisionConfig, who: str) -> dict[str, Any]:
        """Validate, compile and swap in new decision rules; returns the applied section."""
        try:
            new = section if isinstance(section, DecisionConfig) else DecisionConfig.model_validate(section)
        except ValidationError as exc:
            errors = [f"decision.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
            raise ConfigError("; ".join(errors), errors) from exc
        return self._apply_decision(new, who, self._set_named(new))

    def _apply_decision(self, new: DecisionConfig, who: str, set_name: str) -> dict[str, Any]:
        with self._lock:
            info = self.pipeline.inspector.info
            rules = compile_rules(new, info.names, Path(info.path), self.cfg.base_dir)
            rules = dataclasses.replace(rules, set_name=set_name)  # verdicts judged by them carry the name
            before = self._decision
            self.pipeline.inspector.set_rules(rules)
            self._history.append((before, self._set))
            del self._history[:-50]
            self._decision, self._rules, self._set = new, rules, set_name
        after = new.model_dump(mode="json")
        self._changed("decision", before.model_dump(mode="json"), after, who)
        return after

    def revert_decision(self, who: str) -> dict[str, Any]:
        """Back to the rules (and their set name) in force before the last change."""
        if not self._history:
            raise ConfigError("decision: no earlier rules to revert to")
        previous, name = self._history.pop()
        applied = self._apply_decision(previous, who, name)
        self._history.pop()  # the revert itself is not a step to revert to
        return applied

    # -- decision sets --------------------------------------------------------------------------------
    def decision_sets(self) -> list[str]:
        """The named threshold sets: `default` (the top-level rules) and those of `decision_sets:`."""
        return ["default", *sorted(self.cfg.app.decision_sets)]

    def active_decision_set(self) -> str:
        """The set in force: a name of `decision_sets()`, `recipe:<name>` (a recipe's own rules) or
        `custom` (rules changed by hand that match no set)."""
        return self._set

    def activate_decision_set(self, name: str, who: str = "system") -> dict[str, Any]:
        """Apply a named set like any decision change (validated against the model, compiled, swapped
        between frames, reported to listeners, revertible); returns the applied section."""
        if name not in self.decision_sets():
            raise ConfigError(f"unknown decision set {name!r}; configured: {', '.join(self.decision_sets())}")
        rules = self._set_rules(name)
        if name == self._set and rules == self._decision:
            return rules.model_dump(mode="json")  # in force already: no change to record
        before = self._set
        applied = self._apply_decision(rules, who, name)
        self._changed("decision_set", before, name, who)
        return applied

    def _set_rules(self, name: str) -> DecisionConfig:
        return self.cfg.app.decision if name == "default" else self.cfg.app.decision_sets[name]

    def _set_named(self, rules: DecisionConfig) -> str:
        """The set these rules are: the current one if still equal, else the first equal set, else custom."""
        if rules == self._decision and self._set != "custom":
            return self._set
        for name in self.decision_sets():
            if rules == self._set_rules(name):
                return name
        return "custom"

    # -- recipes --------------------------------------------------------------------------------------
    def recipes(self) -> list[str]:
        return ["default", *sorted(self.cfg.app.recipes)]

    def recipe_info(self) -> dict[str, dict[str, Any]]:
        out = {"default": {"model": str(self.cfg.engine.model), "description": "the engine's own model"}}
        for name, r in self.cfg.app.recipes.items():
            out[name] = {"model": r.model, "description": r.description}
        return out

    def active_recipe(self) -> str:
        return self._recipe

    def activate_recipe(self, name: str, who: str = "system") -> str:
        """Load the recipe's model and rules, then swap them in between frames."""
        if name not in self.recipes():
            raise ConfigError(f"unknown recipe {name!r}; configured: {', '.join(self.recipes())}")
        with self._lock:
            if name == self._recipe:
                return name
            recipe = self.cfg.app.recipes.get(name)
            model = recipe.model if recipe is not None else str(self.cfg.engine.model)
            decision = (recipe.decision if recipe is not None else None) or self.cfg.app.decision
            inspector, rules = self._load_recipe(model, decision, self._references)
            own = recipe is not None and recipe.decision is not None
            set_name = f"recipe:{name}" if own else "default"
            rules = dataclasses.replace(rules, set_name=set_name)
            inspector.set_rules(rules)
            old = self.pipeline.swap_inspector(inspector, name)
            try:
                old.engine.close()
            except Exception:
                log.exception("closing the previous engine failed")
            before = self._recipe
            self._recipe, self._decision, self._rules = name, decision, rules
            self._set = set_name
            self._history.clear()
        self._changed("recipe", before, name, who)
        return name

    # -- references ----------------------------------------------------------------------------------
    def references_for(self, camera: str) -> np.ndarray | None:
        return self._references.get(camera)


@dataclass
class ServiceContext:
    """What a sink or component gets in `bind(ctx)`."""

    ioloop: IoLoop
    control: ServiceControl
    state_dir: Path
    config: LoadedConfig
    _snapshot: Callable[[], ServiceSnapshot]
    _subscribe: Callable[[VerdictListener, str], Subscription]
    _workers: Callable[[], dict[str, Any]]

    def snapshot(self) -> ServiceSnapshot:
        """The full read model (statistics included: call it at human or PLC rates)."""
        return self._snapshot()

    def workers(self) -> dict[str, Any]:
        """Heartbeat ages and liveness of the inference worker and the watchdog (cheap: any rate)."""
        return self._workers()

    def subscribe(self, listener: VerdictListener, name: str) -> Subscription:
        return self._subscribe(listener, name)
