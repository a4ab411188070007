"""The built-in logic function: rules in a safe expression language with replicated stateful blocks, each written to its output point."""

from __future__ import annotations

import ast
import builtins
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from simpleeval import DEFAULT_OPERATORS, SimpleEval

from cluster.commands import UNAVAILABLE, Scalar
from cluster.state import PointValue, ProcessImage

from .building import DrivenPoint
from .hookspecs import hookimpl
from .types import FunctionContext, FunctionSpec

FUNCTION = "logic"
RETRY = 0.5  # seconds before a rule whose step did not apply is evaluated again
IDLE = 60.0  # seconds to wait for a point change when no rule needs a cycle or a timer
MAX_EXPRESSION = 1000  # characters

# name -> (fewest, most) arguments; most None: any number
FUNCTIONS: dict[str, tuple[int, int | None]] = {"p": (1, 1), "min": (2, None), "max": (2, None), "abs": (1, 1), "round": (1, 2)}
BLOCKS: dict[str, tuple[int, int | None]] = {
    "on_delay": (2, 2), "off_delay": (2, 2), "latch": (2, 2), "counter": (2, 2), "hysteresis": (3, 3),
}
_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd, ast.Not,
              ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_NODES = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.BinOp, ast.UnaryOp, ast.Compare, ast.IfExp, ast.Call,
          ast.Constant, ast.Name, ast.Load, *_OPERATORS)
_EVAL_OPERATORS = {op: DEFAULT_OPERATORS[op] for op in _OPERATORS}  # simpleeval's, with its limits on ** and string *
_WHAT = {
    ast.Attribute: "attribute access", ast.Subscript: "indexing", ast.Lambda: "lambda", ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension", ast.DictComp: "a comprehension", ast.GeneratorExp: "a comprehension",
    ast.List: "a list", ast.Tuple: "a tuple", ast.Dict: "a dict", ast.Set: "a set", ast.NamedExpr: "assignment (:=)",
    ast.JoinedStr: "an f-string", ast.Starred: "unpacking (*)",
}


class ExpressionError(ValueError):
    """An expression that cannot be a rule: what is wrong and where (1-based line and column)."""

    def __init__(self, line: int, column: int, problem: str) -> None:
        super().__init__(f"line {line}, column {column}: {problem}")


class Unavailable(Exception):
    """An input point has no usable value: the rule is not evaluated until it has one."""


@dataclass(frozen=True)
class Block:
    """A stateful block's call site: `slot` (kind@line:column) keys its state in the rule's record."""

    slot: str
    kind: str
    args: tuple[ast.expr, ...]


@dataclass(frozen=True)
class Rule:
    """A checked expression: its blocks in evaluation order (inner before outer), then `body` reading their results by slot."""

    text: str
    body: ast.expr
    blocks: tuple[Block, ...]
    inputs: frozenset[str]


class _Source:
    """Maps AST positions (UTF-8 byte columns in the stripped text) to 1-based lines and characters in the rule as written."""

    def __init__(self, text: str) -> None:
        self.lines = text.strip().splitlines() or [""]
        leading = text[: len(text) - len(text.lstrip())]
        self.line_offset = leading.count("\n")
        self.column_offset = len(leading) - leading.rfind("\n") - 1  # on the first line only

    def error(self, line: int, column: int, problem: str) -> ExpressionError:
        """`line` and `column` are 1-based in the stripped text, `column` in characters."""
        return ExpressionError(line + self.line_offset, column + (self.column_offset if line == 1 else 0), problem)

    def position(self, node: ast.AST) -> tuple[int, int]:
        """The node's line and column in the rule as written."""
        column = len(self.lines[node.lineno - 1].encode()[: node.col_offset].decode(errors="replace")) + 1
        return node.lineno + self.line_offset, column + (self.column_offset if node.lineno == 1 else 0)

    def at(self, node: ast.AST, problem: str) -> ExpressionError:
        return ExpressionError(*self.position(node), problem)


def compile_rule(text: str, points: set[str] | None = None) -> Rule:
    """Parse and check an expression (with `points`: every p("...") names one of them); ExpressionError if it is not a rule."""
    source = _Source(text)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        line = exc.lineno or 1
        column = exc.offset or len(source.lines[min(line, len(source.lines)) - 1]) + 1
        raise source.error(line, column, exc.msg) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes; nesting beyond the parser's limits
        raise source.error(1, 1, str(exc) or type(exc).__name__) from None
    nodes = list(ast.walk(tree))
    callees = {id(node.func) for node in nodes if isinstance(node, ast.Call)}
    inputs: set[str] = set()
    for node in nodes:
        _check(node, id(node) in callees, source, points, inputs)
    slots = {node: ast.Name(id=_slot(node, source), ctx=ast.Load()) for node in nodes if _is_block(node)}
    for node in nodes:  # each block call becomes a name its result is looked up by
        for field, value in ast.iter_fields(node):
            if isinstance(value, list):
                value[:] = [slots.get(item, item) for item in value]
            elif isinstance(value, ast.Call) and value in slots:
                setattr(node, field, slots[value])
    order = sorted(slots, key=lambda call: (call.end_lineno, call.end_col_offset))
    blocks = tuple(Block(slots[call].id, call.func.id, tuple(call.args)) for call in order)
    return Rule(text, tree.body, blocks, frozenset(inputs))


def _slot(call: ast.Call, source: _Source) -> str:
    """A block's slot: its kind and position, stable as long as the expression is."""
    line, column = source.position(call)
    return f"{call.func.id}@{line}:{column}"


def _is_block(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BLOCKS


def _check(node: ast.AST, callee: bool, source: _Source, points: set[str] | None, inputs: set[str]) -> None:
    """Raise ExpressionError unless `node` is allowed where it is; collect the points p() reads. Parents are checked
    before their children (ast.walk is breadth first), so operators are checked by the expression that holds them."""
    if not isinstance(node, _NODES):
        raise source.at(node, f"{_WHAT.get(type(node), type(node).__name__)} is not allowed")
    operators = [node.op] if isinstance(node, (ast.BinOp, ast.UnaryOp)) else node.ops if isinstance(node, ast.Compare) else []
    for operator in operators:
        if not isinstance(operator, _OPERATORS):
            raise source.at(node, f"the operator {type(operator).__name__} is not allowed")
    if isinstance(node, ast.Constant) and type(node.value) not in (bool, int, float, str):
        raise source.at(node, f"the constant {node.value!r} is not allowed")
    if isinstance(node, ast.Name) and not callee:
        what = f"{node.id!r} is not allowed" if node.id in vars(builtins) else f"unknown name {node.id!r}"
        raise source.at(node, f'{what}; read a point with p("name")')
    if isinstance(node, ast.Call):
        _check_call(node, source, points, inputs)


def _check_call(node: ast.Call, source: _Source, points: set[str] | None, inputs: set[str]) -> None:
    if not isinstance(node.func, ast.Name):
        raise source.at(node, "only the rule functions can be called")
    name = node.func.id
    arity = FUNCTIONS.get(name) or BLOCKS.get(name)
    if arity is None:
        known = ", ".join(sorted({*FUNCTIONS, *BLOCKS}))
        raise source.at(node, f"{name!r} is not allowed" if name in vars(builtins) else f"unknown function {name!r} (functions: {known})")
    if node.keywords:
        raise source.at(node.keywords[0].value, f"{name} takes no keyword arguments")
    fewest, most = arity
    if not fewest <= len(node.args) <= (most if most is not None else len(node.args)):
        takes = str(fewest) if fewest == most else f"{fewest} to {most}" if most is not None else f"at least {fewest}"
        raise source.at(node, f"{name} takes {takes} argument{'s' if takes != '1' else ''}, got {len(node.args)}")
    seconds = _literal(node.args[1]) if name in ("on_delay", "off_delay") else None
    if seconds is not None and not _is_seconds(seconds):
        raise source.at(node.args[1], f"{name} takes seconds >= 0, got {seconds!r}")
    if name == "p":
        argument = node.args[0]
        if not (isinstance(argument, ast.Constant) and type(argument.value) is str):
            raise source.at(argument, 'p takes a point name in quotes, e.g. p("room.temp")')
        if points is not None and argument.value not in points:
            raise source.at(argument, f"unknown point {argument.value!r}")
        inputs.add(argument.value)


def _literal(node: ast.expr) -> object:
    """The value of a literal argument such as 4, -1 or "x"; None when it is computed."""
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return None


def _is_seconds(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and value >= 0


# ---- evaluation: pure, given (block states, point values, now) ----


def _truth(value: object, what: str) -> bool:
    if type(value) not in (bool, int, float):
        raise TypeError(f"{what} must be a bool or a number, got {type(value).__name__}")
    return bool(value)


def _number(value: object, what: str) -> float:
    if type(value) not in (int, float):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    return value


def _seconds(value: object, what: str) -> float:
    if not _is_seconds(value):
        raise ValueError(f"{what} must be seconds >= 0, got {value!r}")
    return value


BlockResult = tuple[Scalar, dict | None, float | None]  # (value, the state to keep or None, when to evaluate again)


def on_delay(state: dict | None, now: float, condition: object, seconds: object) -> BlockResult:
    """TON: true once `condition` has held for `seconds` (its start is kept, so a new active continues the delay)."""
    delay = _seconds(seconds, "on_delay seconds")
    if not _truth(condition, "on_delay condition"):
        return False, None, None
    since = state["since"] if state else now
    done = now - since >= delay
    return done, {"since": since}, None if done else since + delay


def off_delay(state: dict | None, now: float, condition: object, seconds: object) -> BlockResult:
    """TOF: true while `condition` holds and for `seconds` after it stops holding."""
    delay = _seconds(seconds, "off_delay seconds")
    if _truth(condition, "off_delay condition"):
        return True, {"off_since": None}, None
    if state is None:
        return False, None, None
    off_since = state["off_since"] if state["off_since"] is not None else now
    if now - off_since >= delay:
        return False, None, None
    return True, {"off_since": off_since}, off_since + delay


def latch(state: dict | None, now: float, set_: object, reset: object) -> BlockResult:
    """SR flip-flop, reset wins."""
    on = not _truth(reset, "latch reset") and (_truth(set_, "latch set") or state is not None)
    return on, {"q": True} if on else None, None


def counter(state: dict | None, now: float, up: object, reset: object) -> BlockResult:
    """Counts the rising edges of `up` (the first evaluation with `up` true counts); `reset` sets it to 0."""
    count, last = (state["n"], state["up"]) if state else (0, False)
    rising = _truth(up, "counter up")
    count = 0 if _truth(reset, "counter reset") else count + (rising and not last)
    return count, {"n": count, "up": rising} if count or rising else None, None


def hysteresis(state: dict | None, now: float, x: object, low: object, high: object) -> BlockResult:
    """True once `x` rises above `high`, until it falls below `low`."""
    value, bottom, top = _number(x, "hysteresis x"), _number(low, "hysteresis low"), _number(high, "hysteresis high")
    if bottom > top:
        raise ValueError(f"hysteresis low {bottom!r} is above high {top!r}")
    on = value > top or (state is not None and value >= bottom)
    return on, {"q": True} if on else None, None


_BLOCK_FUNCTIONS: dict[str, Callable[..., BlockResult]] = {
    "on_delay": on_delay, "off_delay": off_delay, "latch": latch, "counter": counter, "hysteresis": hysteresis,
}


def _unavailable(point: PointValue | None) -> bool:
    return point is None or point.value is None or point.quality in UNAVAILABLE


def _reader(points: Mapping[str, PointValue]) -> Callable[[str], Scalar]:
    def p(name: str) -> Scalar:
        point = points.get(name)
        if _unavailable(point):
            raise Unavailable(f"{name} has no usable value")
        return point.value

    return p


def _output(value: object) -> Scalar:
    if type(value) not in (bool, int, float, str) or (type(value) is float and not math.isfinite(value)):
        raise TypeError(f"the result must be a bool, a number or a string, got {value!r}")
    return value


def evaluate(rule: Rule, states: Mapping[str, dict], points: Mapping[str, PointValue], now: float) -> tuple[Scalar, dict[str, dict], float | None]:
    """The rule's output, its blocks' next states and the earliest time a running timer ends (None: none runs). Raises
    Unavailable when an input has no usable value, or whatever the expression raises."""
    functions = {"p": _reader(points), "min": min, "max": max, "abs": abs, "round": round}
    results: dict[str, Scalar] = {}
    evaluator = SimpleEval(operators=_EVAL_OPERATORS, functions=functions, names=results)
    new_states, wakes = {}, []
    for block in rule.blocks:  # every block runs on every evaluation, whatever and/or/if-else would skip
        args = [evaluator.eval(rule.text, previously_parsed=arg) for arg in block.args]
        results[block.slot], state, wake = _BLOCK_FUNCTIONS[block.kind](states.get(block.slot), now, *args)
        if state is not None:
            new_states[block.slot] = state
        if wake is not None:
            wakes.append(wake)
    return _output(evaluator.eval(rule.text, previously_parsed=rule.body)), new_states, min(wakes, default=None)


class Decision(NamedTuple):
    """A rule's next record, whether its output must be written, its journal entry and when to evaluate it again."""

    record: dict | None
    write: bool
    event: dict | None
    wake: float | None


def _same(a: Scalar, b: Scalar) -> bool:
    return type(a) is type(b) and a == b


def _output_refusal(point: str, image: ProcessImage) -> str | None:
    doc = image.documents["points"].get(point)
    if doc is None:
        return f"output point {point!r} is not in [[points]]"
    return None if doc.body.get("writable") else f"output point {point!r} is not writable"


def decide(name: str, entry: LogicEntry, version: int, record: dict | None, image: ProcessImage, now: float) -> Decision:
    """Evaluate rule `name` (document `version`) from its replicated `record`: a rule whose document changed starts afresh
    (blocks reset, output written); an error disables the rule until its document changes; an unavailable input leaves
    everything as it is."""
    current = record is not None and record.get("version") == version
    if current and record.get("disabled"):
        return Decision(record, False, None, None)
    base = record if current else {"version": version, "blocks": {}}  # a changed rule (maybe another output) writes again
    try:
        refusal = _output_refusal(entry.output, image)
        if refusal:
            raise ValueError(refusal)
        output, blocks, wake = evaluate(entry.rule, base["blocks"], image.points, now)
    except Unavailable:
        return Decision(record, False, None, None)
    except Exception as exc:  # whatever a rule raises disables that rule only
        error = f"{type(exc).__name__}: {exc}"
        return Decision({**base, "disabled": error}, False, {"rule": name, "event": "disabled", "error": error, "version": version}, None)
    write = "output" not in base or not _same(output, base["output"])
    return Decision({**base, "blocks": blocks, "output": output}, write, None, wake)


# ---- configuration ----


class LogicEntry(BaseModel):
    """A [[logic]] entry: an expression evaluated when its inputs change (and every `cycle` seconds), written to `output`."""

    model_config = ConfigDict(extra="forbid")
    output: DrivenPoint
    expression: str = Field(min_length=1, max_length=MAX_EXPRESSION)
    cycle: float | None = Field(None, ge=0.1, le=86400)

    @field_validator("expression")
    @classmethod
    def _expression_compiles(cls, expression: str, info: ValidationInfo) -> str:
        try:
            compile_rule(expression, (info.context or {}).get("points"))
        except ExpressionError as exc:
            raise PydanticCustomError("logic_expression", "{problem}", {"problem": str(exc)}) from None
        return expression

    @cached_property
    def rule(self) -> Rule:
        return compile_rule(self.expression)


def logic_list(image: ProcessImage) -> list[dict[str, Any]]:
    """Every configured rule with its replicated state (blocks of the current version), last output and error."""
    records = image.functions.get(FUNCTION, {})
    rules = []
    for name, doc in sorted(image.documents.get(FUNCTION, {}).items()):
        record = records.get(name) or {}
        current = record.get("version") == doc.version
        inputs = LogicEntry.model_validate(doc.body).rule.inputs
        rules.append({
            "name": name, "output": doc.body["output"], "expression": doc.body["expression"], "cycle": doc.body["cycle"],
            "version": doc.version, "state": record.get("blocks", {}) if current else {}, "last_output": record.get("output"),
            "disabled": record.get("disabled") if current else None,
            "unavailable": sorted(point for point in inputs if _unavailable(image.points.get(point))),
        })
    return rules


# ---- the running function ----


class LogicFunction:
    """Evaluates the rules whose inputs changed, whose cycle or timer is due; commits what changed in one step per round."""

    def __init__(self, context: FunctionContext) -> None:
        self.context = context
        # Each rule with the version of the document it was read from (read together: the image changes meanwhile).
        documents = context.image.documents.get(FUNCTION, {})
        self.rules = {name: (doc.version, LogicEntry.model_validate(doc.body)) for name, doc in documents.items() if name in context.entries}
        self.by_point: dict[str, set[str]] = {}
        for name, (_, entry) in self.rules.items():
            for point in entry.rule.inputs:
                self.by_point.setdefault(point, set()).add(name)
        # rule -> when it must be evaluated (at once when the function starts; then cycle, timer or retry); local to this active
        self.due: dict[str, float] = dict.fromkeys(self.rules, 0.0)

    async def run(self) -> None:
        await self._retire_removed()
        while True:
            changed = await self.context.changed(self._sleep())
            now = time.time()
            names = set(self.rules) if "*" in changed else {name for point in changed for name in self.by_point.get(point, ())}
            await self._evaluate(names | {name for name, due in self.due.items() if due <= now}, now)

    def _sleep(self) -> float:
        return min(max(0.0, min(self.due.values(), default=math.inf) - time.time()), IDLE)

    async def _retire_removed(self) -> None:
        """Records of rules no longer configured are deleted, each with a "removed" journal entry."""
        records = dict(self.context.image.functions.get(FUNCTION, {}))
        gone = sorted(name for name in records if name not in self.rules)
        if gone:
            await self.context.try_step(
                "retiring removed rules", changes=tuple((name, records[name], None) for name in gone), journal=tuple({"rule": name, "event": "removed"} for name in gone)
            )

    async def _evaluate(self, names: set[str], now: float) -> None:
        image = self.context.image
        records = image.functions.get(FUNCTION, {})
        changes, journal, writes = [], [], []
        for name in sorted(names):
            (version, entry), current = self.rules[name], records.get(name)
            decision = decide(name, entry, version, current, image, now)
            self._schedule(name, decision.wake, entry.cycle, now)
            if decision.record != current:
                changes.append((name, current, decision.record))
            if decision.write:
                writes.append((entry.output, decision.record["output"]))
            if decision.event:
                self.context.log.warning("logic rule %s disabled: %s", name, decision.event["error"])
                journal.append(decision.event)
        if changes and not await self.context.try_step("logic step", changes=tuple(changes), journal=tuple(journal), writes=tuple(writes)):
            self.due.update({name: now + RETRY for name, _, _ in changes})

    def _schedule(self, name: str, wake: float | None, cycle: float | None, now: float) -> None:
        due = min(wake if wake is not None else math.inf, now + cycle if cycle else math.inf)
        if math.isfinite(due):
            self.due[name] = due
        else:
            self.due.pop(name, None)


@hookimpl
def tandem_functions(register: Callable[[FunctionSpec], None]) -> None:
    register(FunctionSpec(FUNCTION, LogicFunction, LogicEntry))
