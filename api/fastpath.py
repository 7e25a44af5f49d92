"""A compiled executor for plain documents: the hot path without graphql-core's per-field work.

graphql-core's executor costs ~20 µs per field on the reference machine (an
info object, a path, awaitable checks and incremental-delivery bookkeeping per
field), several times the database read of ``order(orderId)``. Most requests
here are *plain*: no fragments, directives, abstract types or repeated
response keys. :func:`plan` compiles such a document once into closures that
read attributes and serialise leaves; :func:`execute` calls the resolvers
exactly as graphql-core would (same arguments, same info) and completes their
results with the closures.

Strawberry's own per-call wrapper around a resolver (an Info, argument
conversion, an extension chain of partials, two coroutine layers) is skipped
for fields that need none of it (no field extensions, hence no permission
classes; no exception handlers in the schema): :class:`_Call` does the same
conversion and calls the resolver directly. Arguments written as literals
(``orders(first: 20, filter: {status: [PAID]})``) are coerced and converted
once per plan, not per request, so resolvers must treat their arguments as
read-only (they do: they build queries from them). Variables of type ``ID``
or ``String`` given as strings need no coercion and get none.

Nested resolvers (``Order.customer``, ``Customer.orders``, ``totalCount``) are
called during completion; their awaitables are gathered level by level, so
DataLoader batching works as under graphql-core (one batch per level).

Any other document goes to graphql-core's ``execute``, and so does a plain one
whose results hold a surprise (a null for a non-null field, a value a scalar
refuses, an error below the root): it is executed again there, so that the
error reported is graphql-core's. Reads are idempotent, so running twice is
only slower. An error of a root resolver is reported as graphql-core reports
it (located at the field; a non-null root field nulls ``data``).
``tests/test_api_fastpath.py`` compares both executors on the same documents.
"""

from __future__ import annotations

import asyncio
import operator
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    Undefined,
    located_error,
)
from graphql import execute as graphql_execute
from graphql.execution.get_variable_signature import GraphQLVariableSignature, get_variable_signature
from graphql.execution.values import (
    VariableValues,
    VariableValueSource,
    get_argument_values,
    get_variable_values,
)
from graphql.language import ListValueNode, ObjectValueNode, ValueNode, VariableNode
from graphql.pyutils import Path
from graphql.type import GraphQLBoolean, GraphQLID, GraphQLInt, GraphQLString
from strawberry.schema.schema import _OperationContextAwareGraphQLResolveInfo
from strawberry.schema.types.base_scalars import isoformat
from strawberry.types.arguments import convert_arguments
from strawberry.types.field import StrawberryField

# Compiled plans kept (documents are cached by text in api.limits; this holds
# the plans of the same documents, keyed by identity).
PLAN_CACHE_SIZE = 512


class _Unexpected(Exception):
    """A result the compiled plan does not handle: run graphql-core instead."""


def _has_variables(value: ValueNode) -> bool:
    if isinstance(value, VariableNode):
        return True
    if isinstance(value, ListValueNode):
        return any(_has_variables(v) for v in value.values)
    if isinstance(value, ObjectValueNode):
        return any(_has_variables(f.value) for f in value.fields)
    return False


class _Call:
    """A field with a resolver, as the plan calls it.

    ``direct``: the strawberry field whose resolver is called without
    strawberry's wrapper (None: call ``field.resolve``, the wrapper). For a
    node whose arguments are all literals, the coerced and converted arguments
    are kept here after the first call.
    """

    __slots__ = ("args", "config", "converted", "direct", "field", "info_class", "literal", "node",
                 "parent", "pass_info", "pass_source", "positional_source", "scalars")

    def __init__(self, schema: GraphQLSchema, field: GraphQLField, node: FieldNode,
                 parent: GraphQLObjectType) -> None:
        self.field = field
        self.node = node
        self.parent = parent
        self.literal = not any(_has_variables(a.value) for a in node.arguments or ())
        self.args: dict[str, Any] | None = None
        self.converted: dict[str, Any] | None = None
        self.direct = _direct(schema, field)
        self.info_class: Any = None
        self.config: Any = None
        self.scalars: Any = None
        self.pass_info: str | None = None
        self.pass_source: tuple[str, ...] = ()
        self.positional_source = False
        if self.direct is not None:
            resolver = self.direct.base_resolver
            assert resolver is not None, "_direct() admits only fields with a resolver"
            strawberry_schema: Any = getattr(schema, "_strawberry_schema")  # noqa: B009
            self.info_class = strawberry_schema.config.info_class
            self.config = strawberry_schema.config
            self.scalars = strawberry_schema.schema_converter.scalar_registry
            # What strawberry's get_arguments adds to the converted arguments.
            info = resolver.info_parameter
            self.pass_info = info.name if info is not None else None
            self.pass_source = tuple(p.name for p in (resolver.parent_parameter, resolver.root_parameter)
                                     if p is not None)
            self.positional_source = resolver.self_parameter is not None


def _direct(schema: GraphQLSchema, field: GraphQLField) -> StrawberryField | None:
    """The strawberry field if its resolver may be called without strawberry's wrapper."""
    definition = (field.extensions or {}).get("strawberry-definition")
    strawberry_schema = getattr(schema, "_strawberry_schema", None)
    if (not isinstance(definition, StrawberryField) or definition.base_resolver is None
            or definition.extensions or strawberry_schema is None):
        return None
    # Exception handlers turn a resolver's exception into a result: only the wrapper does that.
    converter = getattr(strawberry_schema, "schema_converter", None)
    if (getattr(converter, "_exception_handler_specs", True)
            or getattr(converter, "scalar_registry", None) is None):
        return None
    return definition


class _Run:
    """One execution: what resolvers' info needs, and the awaitables pending."""

    __slots__ = ("args", "context", "is_awaitable", "operation", "operation_extensions", "pending",
                 "root_value", "schema", "variables")

    def __init__(self, schema: GraphQLSchema, operation: OperationDefinitionNode,
                 variables: VariableValues, root_value: Any, context: Any,
                 is_awaitable: Callable[[Any], bool], operation_extensions: Any) -> None:
        self.schema = schema
        self.operation = operation
        self.variables = variables
        self.root_value = root_value
        self.context = context
        self.is_awaitable = is_awaitable
        self.operation_extensions = operation_extensions
        self.args: dict[int, dict[str, Any]] = {}
        # (awaitable, completion, container, key, path) of resolvers called but not awaited.
        self.pending: list[tuple[Awaitable[Any], Complete, dict[str, Any], str, Path]] = []

    def call(self, call: _Call, source: Any, path: Path) -> Any:
        """Call a field's resolver as graphql-core (and strawberry's wrapper) would."""
        field, node = call.field, call.node
        if call.literal:
            args = call.args
            if args is None:
                args = call.args = get_argument_values(field, node, self.variables)
        else:
            args = self.args.get(id(node))
            if args is None:
                args = self.args[id(node)] = get_argument_values(field, node, self.variables)
        # The info graphql-core's executor (with strawberry's context class) would build.
        info = _OperationContextAwareGraphQLResolveInfo(
            node.name.value, [node], field.type, call.parent, path, self.schema, {}, self.root_value,
            self.operation, self.variables.coerced, self.context, self.is_awaitable, None, None,
            self.operation_extensions)
        definition = call.direct
        if definition is None:
            assert field.resolve is not None, "plan() admits only fields with resolvers here"
            return field.resolve(source, info, **args)
        # What strawberry's wrapper does for a field without extensions or handlers.
        strawberry_info = call.info_class(_raw_info=info, _field=definition)
        kwargs = call.converted
        if kwargs is None:
            kwargs = convert_arguments(args, definition.arguments, scalar_registry=call.scalars,
                                       config=call.config, info=strawberry_info)
            if call.literal:
                call.converted = kwargs
        extra: dict[str, Any] = {name: source for name in call.pass_source}
        if call.pass_info is not None:
            extra[call.pass_info] = strawberry_info
        resolver = definition.base_resolver
        assert resolver is not None, "_direct() admits only fields with a resolver"
        if call.positional_source:
            return resolver(source, **kwargs, **extra)
        return resolver(**kwargs, **extra)


# (value, path of the value, run) -> the value completed as JSON-ready data.
Complete = Callable[[Any, Path, _Run], Any]
# A completion, and whether it calls resolvers below (only then are paths built:
# a resolver's info carries its path; attributes and leaves never read it).
Compiled = tuple[Complete, bool]


@dataclass(frozen=True, slots=True)
class _Root:
    key: str
    call: _Call
    complete: Complete


@dataclass(frozen=True, slots=True)
class Plan:
    """A plain query operation: its root fields and how to complete each.

    ``strings``: the variables, when all are of type ID or String (their
    signatures), else None.
    """

    operation: OperationDefinitionNode
    roots: tuple[_Root, ...]
    strings: tuple[GraphQLVariableSignature, ...] | None


def _required(inner: Complete) -> Complete:
    def required(value: Any, path: Path, run: _Run) -> Any:
        if value is None:
            raise _Unexpected("null for a non-null field")
        return inner(value, path, run)

    return required


def _optional(inner: Complete) -> Complete:
    def optional(value: Any, path: Path, run: _Run) -> Any:
        return None if value is None else inner(value, path, run)

    return optional


def _compile(schema: GraphQLSchema, gtype: GraphQLOutputType,
             selection_set: SelectionSetNode | None) -> Compiled | None:
    if isinstance(gtype, GraphQLNonNull):
        inner = _compile_nullable(schema, gtype.of_type, selection_set)
        return None if inner is None else (_required(inner[0]), inner[1])
    inner = _compile_nullable(schema, gtype, selection_set)
    return None if inner is None else (_optional(inner[0]), inner[1])


def _compile_nullable(schema: GraphQLSchema, gtype: GraphQLOutputType,
                      selection_set: SelectionSetNode | None) -> Compiled | None:
    if isinstance(gtype, GraphQLList):
        compiled = _compile(schema, gtype.of_type, selection_set)
        if compiled is None:
            return None
        item, needs_path = compiled

        def items(value: Any, path: Path, run: _Run) -> list[Any]:
            if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
                raise _Unexpected("not a list")
            if needs_path:
                return [item(v, Path(path, i, None), run) for i, v in enumerate(value)]
            return [item(v, path, run) for v in value]

        return items, needs_path
    if isinstance(gtype, GraphQLScalarType | GraphQLEnumType):
        return None if selection_set is not None else (_compile_leaf(gtype), False)
    if isinstance(gtype, GraphQLObjectType) and selection_set is not None:
        return _compile_object(schema, gtype, selection_set)
    return None  # interfaces and unions: graphql-core


def _compile_leaf(gtype: GraphQLScalarType | GraphQLEnumType) -> Complete:
    serialize = gtype.serialize

    def leaf(value: Any, path: Path, run: _Run) -> Any:
        out = serialize(value)
        if out is None or out is Undefined:
            raise _Unexpected("a value the type does not serialise")
        return out

    names = _enum_names(gtype) if isinstance(gtype, GraphQLEnumType) else None
    if names:

        def enum_leaf(value: Any, path: Path, run: _Run) -> Any:
            try:
                name = names.get(value)
            except TypeError:  # unhashable: not a member
                name = None
            return name if name is not None else leaf(value, path, run)

        return enum_leaf
    return leaf


def _enum_names(gtype: GraphQLEnumType) -> dict[Any, str] | None:
    """Member -> name of a strawberry enum (None for another enum).

    Strawberry's enums serialise a member by scanning the values for its
    value; the same answer from a dict.
    """
    wrapped = getattr(gtype, "wrapped_cls", None)
    if not isinstance(wrapped, type) or not issubclass(wrapped, Enum):
        return None
    return {member: name for member in wrapped for name, value in gtype.values.items()
            if member.value == value.value}


def _key(node: FieldNode) -> str:
    return node.alias.value if node.alias else node.name.value


def _plain_fields(selection_set: SelectionSetNode) -> list[FieldNode] | None:
    """The selections if all are fields without directives and with distinct keys."""
    fields: list[FieldNode] = []
    keys: set[str] = set()
    for selection in selection_set.selections:
        if not isinstance(selection, FieldNode) or selection.directives:
            return None
        key = _key(selection)
        if key in keys:
            return None  # repeated keys merge their selections: graphql-core does that
        keys.add(key)
        fields.append(selection)
    return fields


def _reader(field: GraphQLField) -> tuple[str | None, Callable[[Any], Any]]:
    """Reads a strawberry attribute field: (the attribute, when ``getattr`` is its
    resolver; a reader of the field)."""
    definition = (field.extensions or {}).get("strawberry-definition")
    if definition is not None and getattr(definition, "default_resolver", None) is getattr:
        return definition.python_name, operator.attrgetter(definition.python_name)
    resolve = field.resolve
    assert resolve is not None, "attribute fields have strawberry's default resolver"
    return None, lambda value: resolve(value, None)


def _compile_object(schema: GraphQLSchema, gtype: GraphQLObjectType,
                    selection_set: SelectionSetNode) -> Compiled | None:
    nodes = _plain_fields(selection_set)
    if nodes is None:
        return None
    # The completion is generated as one function per selection set, leaves
    # inlined: a loop over steps with three closure calls per leaf was a sixth
    # of the CPU of a 20-order page (cProfile). Names the code uses live in `env`.
    env: dict[str, Any] = {"Path": Path}
    lines = ["def obj(value, path, run):", "    out = {}"]
    any_path = False
    typename = gtype.name
    for i, node in enumerate(nodes):
        key, name = _key(node), node.name.value
        if name == "__typename":
            lines.append(f"    out[{key!r}] = {typename!r}")
            continue
        field = gtype.fields.get(name)
        if field is None or field.resolve is None:
            return None
        compiled = _compile(schema, field.type, node.selection_set)
        if compiled is None:
            return None
        complete, needs_path = compiled
        env[f"c{i}"] = complete
        if field.args or not getattr(field.resolve, "_is_default", False):
            any_path = True
            env[f"call{i}"] = _Call(schema, field, node, gtype)
            lines += [
                f"    p = Path(path, {key!r}, {typename!r})",
                f"    r = run.call(call{i}, value, p)",
                "    if run.is_awaitable(r):",
                f"        out[{key!r}] = None  # filled in when the level's awaitables are done",
                f"        run.pending.append((r, c{i}, out, {key!r}, p))",
                "    else:",
                f"        out[{key!r}] = c{i}(r, p, run)",
            ]
            continue
        attribute, reader = _reader(field)
        if attribute is not None and attribute.isidentifier() and not attribute.startswith("__"):
            lines.append(f"    v = value.{attribute}")
        else:
            env[f"r{i}"] = reader
            lines.append(f"    v = r{i}(value)")
        field_path = f"Path(path, {key!r}, {typename!r})" if needs_path else "path"
        any_path = any_path or needs_path
        fast = None if node.selection_set is not None else _fast_leaf(field.type, i, env)
        if fast is None:
            lines.append(f"    out[{key!r}] = c{i}(v, {field_path}, run)")
        else:
            test, expression = fast
            lines.append(f"    out[{key!r}] = {expression} if {test} else c{i}(v, {field_path}, run)")
    lines.append("    return out")
    exec(compile("\n".join(lines), f"<fastpath {typename}>", "exec"), env)
    obj: Complete = env["obj"]
    return obj, any_path


def _fast_leaf(gtype: GraphQLOutputType, i: int, env: dict[str, Any]) -> tuple[str, str] | None:
    """(test, expression) over ``v``: when the test holds, the expression is what the
    leaf's serialiser returns for ``v``; otherwise the completion decides."""
    named = gtype.of_type if isinstance(gtype, GraphQLNonNull) else gtype
    if named is GraphQLString or named is GraphQLID:
        return "type(v) is str", "v"
    if named is GraphQLInt:
        return "type(v) is int and -2147483648 <= v <= 2147483647", "v"
    if named is GraphQLBoolean:
        return "type(v) is bool", "v"
    if isinstance(named, GraphQLScalarType):
        serialize = named.serialize
        if serialize is isoformat:  # strawberry's Date, Time, DateTime
            env["_TEMPORAL"] = (datetime, date, time)
            return "type(v) in _TEMPORAL", "v.isoformat()"
        if serialize is str and named.name == "Decimal":
            env["Decimal"] = Decimal
            return "type(v) is Decimal", "str(v)"
        if serialize is int:  # api.types.scalars.Long
            return "type(v) is int", "v"
        return None
    names = _enum_names(named) if isinstance(named, GraphQLEnumType) else None
    if not names:
        return None
    env[f"names{i}"] = names
    env[f"enum{i}"] = type(next(iter(names)))
    return f"type(v) is enum{i}", f"names{i}[v]"


def plan(schema: GraphQLSchema, document: DocumentNode, operation_name: str | None) -> Plan | None:
    """The compiled plan of the operation, or None when graphql-core must run it."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(operations) != len(document.definitions):
        return None  # fragments
    if operation_name is None:
        operation = operations[0] if len(operations) == 1 else None
    else:
        operation = next((o for o in operations if o.name and o.name.value == operation_name), None)
    query_type = schema.query_type
    if (operation is None or operation.operation != OperationType.QUERY or operation.directives
            or query_type is None):
        return None
    nodes = _plain_fields(operation.selection_set)
    if not nodes:
        return None
    roots = []
    for node in nodes:
        field = query_type.fields.get(node.name.value)
        if field is None or field.resolve is None:
            return None  # __typename, introspection
        compiled = _compile(schema, field.type, node.selection_set)
        if compiled is None:
            return None
        roots.append(_Root(_key(node), _Call(schema, field, node, query_type), compiled[0]))
    return Plan(operation, tuple(roots), _string_variables(schema, operation))


def _string_variables(schema: GraphQLSchema,
                      operation: OperationDefinitionNode) -> tuple[GraphQLVariableSignature, ...] | None:
    signatures = []
    for definition in operation.variable_definitions or ():
        signature = get_variable_signature(schema, definition)
        if isinstance(signature, GraphQLError):
            return None
        named = signature.type.of_type if isinstance(signature.type, GraphQLNonNull) else signature.type
        if named is not GraphQLID and named is not GraphQLString:
            return None
        signatures.append(signature)
    return tuple(signatures)


def _variables(compiled: Plan, schema: GraphQLSchema,
               values: dict[str, Any] | None) -> VariableValues | list[GraphQLError]:
    """graphql-core's coerced variables; without its work when every value is a string
    for an ID or String variable (coercing a string to either returns it)."""
    values = values or {}
    if compiled.strings is not None:
        sources: dict[str, VariableValueSource] = {}
        coerced: dict[str, Any] = {}
        for signature in compiled.strings:
            value = values.get(signature.name)
            if type(value) is not str:
                break  # missing, null or another type: graphql-core decides
            sources[signature.name] = VariableValueSource(signature, value)
            coerced[signature.name] = value
        else:
            return VariableValues(sources, coerced)
    return get_variable_values(schema, compiled.operation.variable_definitions or (), values,
                               max_errors=50)


_plans: OrderedDict[tuple[int, str | None], tuple[DocumentNode, Plan | None]] = OrderedDict()


def cached_plan(schema: GraphQLSchema, document: DocumentNode, operation_name: str | None) -> Plan | None:
    key = (id(document), operation_name)
    entry = _plans.get(key)
    if entry is not None and entry[0] is document:
        _plans.move_to_end(key)
        return entry[1]
    compiled = plan(schema, document, operation_name)
    _plans[key] = (document, compiled)
    if len(_plans) > PLAN_CACHE_SIZE:
        _plans.popitem(last=False)
    return compiled


async def _settle(value: Any, run: _Run) -> Any:
    return await value if run.is_awaitable(value) else value


async def _drain(run: _Run) -> None:
    """Await the nested resolvers level by level, completing their results."""
    while run.pending:
        level, run.pending = run.pending, []
        if len(level) == 1:
            try:
                results: list[Any] = [await level[0][0]]
            except Exception as exc:
                results = [exc]
        else:
            results = await asyncio.gather(*(p[0] for p in level), return_exceptions=True)
        for (_, complete, container, key, path), result in zip(level, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                raise _Unexpected("a nested resolver failed") from result
            container[key] = complete(result, path, run)


async def _run(compiled: Plan, schema: GraphQLSchema, variable_values: dict[str, Any] | None,
               root_value: Any, context: Any, is_awaitable: Callable[[Any], bool],
               operation_extensions: Any) -> ExecutionResult | None:
    variables = _variables(compiled, schema, variable_values)
    if isinstance(variables, list):
        return None  # graphql-core reports coercion errors
    query_type = schema.query_type
    assert query_type is not None, "plan() admits only schemas with a query type"
    run = _Run(schema, compiled.operation, variables, root_value, context, is_awaitable,
               operation_extensions)
    calls = []
    for root in compiled.roots:
        try:
            value = run.call(root.call, root_value, Path(None, root.key, query_type.name))
        except Exception:
            return None  # an argument (or a synchronous resolver) graphql-core will report
        calls.append(_settle(value, run))
    values: list[Any]
    if len(calls) == 1:
        try:
            values = [await calls[0]]
        except Exception as exc:
            values = [exc]
    else:
        values = await asyncio.gather(*calls, return_exceptions=True)
    data: dict[str, Any] | None = {}
    errors: list[GraphQLError] = []
    for root, value in zip(compiled.roots, values, strict=True):
        if isinstance(value, BaseException):
            if not isinstance(value, Exception):
                raise value
            errors.append(located_error(value, [root.call.node], [root.key]))
            if isinstance(root.call.field.type, GraphQLNonNull):
                data = None  # a non-null root field failed: no data at all
            elif data is not None:
                data[root.key] = None
        elif data is not None:
            data[root.key] = _completed(root, value, query_type.name, run)
    if data is None:
        for awaitable, *_ in run.pending:  # completed before a sibling nulled the data
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
    else:
        try:
            await _drain(run)
        except _Unexpected:
            raise
        except Exception as exc:  # a resolver failing synchronously below the root
            raise _Unexpected("a nested resolver failed") from exc
    return ExecutionResult(data=data, errors=errors or None)


def _completed(root: _Root, value: Any, typename: str, run: _Run) -> Any:
    try:
        return root.complete(value, Path(None, root.key, typename), run)
    except _Unexpected:
        raise
    except Exception as exc:  # a resolver failing synchronously below the root
        raise _Unexpected("a nested resolver failed") from exc


def _default_is_awaitable(value: Any) -> bool:
    return isinstance(value, Awaitable)


async def execute(schema: GraphQLSchema, document: DocumentNode, root_value: Any = None,
                  context_value: Any = None, variable_values: dict[str, Any] | None = None,
                  operation_name: str | None = None, middleware: Any = None,
                  is_awaitable: Callable[[Any], bool] | None = None,
                  operation_extensions: Any = None, **kwargs: Any) -> Any:
    """``graphql.execute`` with the compiled plan where there is one (same signature)."""
    # Strawberry passes a MiddlewareManager, empty unless an extension has a resolve hook.
    has_middleware = bool(getattr(middleware, "middlewares", middleware))
    compiled = None if has_middleware else cached_plan(schema, document, operation_name)
    if compiled is not None:
        try:
            result = await _run(compiled, schema, variable_values, root_value, context_value,
                                is_awaitable or _default_is_awaitable, operation_extensions)
        except _Unexpected:
            result = None
        if result is not None:
            return result
    outcome = graphql_execute(schema, document, root_value=root_value, context_value=context_value,
                              variable_values=variable_values, operation_name=operation_name,
                              middleware=middleware, is_awaitable=is_awaitable,  # type: ignore[arg-type]
                              operation_extensions=operation_extensions, **kwargs)
    if isinstance(outcome, Awaitable):
        return await outcome
    return outcome
