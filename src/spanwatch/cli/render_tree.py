"""A session's spans as a tree: nesting, figures and the two ways of showing it.

Pure: it takes span rows already read from `tool_spans` and returns rich
renderables or plain JSON values. `spanwatch tree` and the live view of
`spanwatch demo` both show sessions through it, so what the demo shows is
exactly what `spanwatch tree` prints for the same store afterwards.

The nesting is the stored one (`parent_span_id`), never recomputed: the point
of the tree is to show what the daemon wrote.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text
from rich.tree import Tree

#: Files shown on a span's line before "+N more".
FILES_SHOWN = 3
#: A shown file name longer than this keeps its end only.
FILE_CHARS = 48


@dataclass(frozen=True, slots=True)
class SpanView:
    """One `tool_spans` row and its paths, as the tree needs them."""

    span_id: str
    tool: str | None
    tool_call_id: str | None
    status: str
    started_at_ms: int | None
    ended_at_ms: int | None
    lead_time_ms: int | None
    tokens_in: int | None
    tokens_out: int | None
    reasoning_tokens: int | None
    cost_usd_e6: int | None
    parent_span_id: str | None
    depth: int
    subtree_cost_usd_e6: int | None
    subtree_token_count: int | None
    paths: tuple[str, ...] = ()

    @property
    def duration_ms(self) -> int | None:
        if self.started_at_ms is None or self.ended_at_ms is None:
            return None
        return self.ended_at_ms - self.started_at_ms

    @property
    def orphaned(self) -> bool:
        return self.status != "done"


@dataclass(slots=True)
class SpanNode:
    span: SpanView
    children: list[SpanNode] = field(default_factory=list)

    def size(self) -> int:
        """Lines this node takes in the tree: itself and every descendant."""
        return 1 + sum(child.size() for child in self.children)


@dataclass(frozen=True, slots=True)
class SessionTree:
    """A session's spans nested by parent, children in start order, with session totals."""

    session_id: str
    roots: tuple[SpanNode, ...]
    spans: int
    orphaned: int
    tokens_in: int | None
    tokens_out: int | None
    cost_usd_e6: int | None
    started_at_ms: int | None
    ended_at_ms: int | None
    root_dir: str | None
    """The directory every absolute path of the session is under; files are shown relative to it."""


def _start_order(node: SpanNode) -> tuple[bool, int, int, str]:
    # Start ascending (spans without a start last); an enclosing span before the
    # spans it encloses, as the engine sorts them; span id for a stable order.
    span = node.span
    end = span.ended_at_ms
    return (
        span.started_at_ms is None,
        span.started_at_ms or 0,
        -(end if end is not None else -1),
        span.span_id,
    )


def build_tree(session_id: str, spans: Iterable[SpanView]) -> SessionTree:
    """Nest `spans` by `parent_span_id`; a span whose parent is not among them is a root."""
    nodes = {span.span_id: SpanNode(span) for span in spans}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent = node.span.parent_span_id
        if parent is not None and parent in nodes and parent != node.span.span_id:
            nodes[parent].children.append(node)
        else:
            roots.append(node)
    for node in nodes.values():
        node.children.sort(key=_start_order)
    roots.sort(key=_start_order)
    # Parents come from time containment, so there are no cycles; if a damaged
    # table had one, its spans would hang off no root: show them as roots.
    reached = _reached(roots)
    roots.extend(sorted((n for n in nodes.values() if id(n) not in reached), key=_start_order))
    views = [node.span for node in nodes.values()]
    starts = [v.started_at_ms for v in views if v.started_at_ms is not None]
    ends = [v.ended_at_ms for v in views if v.ended_at_ms is not None]
    return SessionTree(
        session_id=session_id,
        roots=tuple(roots),
        spans=len(views),
        orphaned=sum(v.orphaned for v in views),
        tokens_in=_total(v.tokens_in for v in views),
        tokens_out=_total(v.tokens_out for v in views),
        cost_usd_e6=_total(v.cost_usd_e6 for v in views),
        started_at_ms=min(starts) if starts else None,
        ended_at_ms=max(ends) if ends else None,
        root_dir=common_dir(path for v in views for path in v.paths),
    )


def _reached(roots: Sequence[SpanNode]) -> set[int]:
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            stack.extend(node.children)
    return seen


def _total(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def common_dir(paths: Iterable[str]) -> str | None:
    """The deepest directory holding every absolute path (relative ones are shown as they are)."""
    absolute = {posixpath.normpath(path) for path in paths if path.startswith("/")}
    if not absolute:
        return None
    root = posixpath.commonpath(sorted(absolute))
    if root in absolute and len(absolute) == 1:
        root = posixpath.dirname(root)  # one file: its directory
    return None if root in ("/", "") else root


# -- figures as text -------------------------------------------------------------


def format_duration(ms: int) -> str:
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    if ms < 3_600_000:
        minutes, rest = divmod(ms // 1000, 60)
        return f"{minutes}m {rest:02d}s"
    hours, rest = divmod(ms // 60_000, 60)
    return f"{hours}h {rest:02d}m"


def format_tokens(count: int) -> str:
    if count < 1000:
        return str(count)
    if count < 1_000_000:
        return f"{count / 1000:.1f}k"
    return f"{count / 1_000_000:.2f}M"


def format_cost(cost_usd_e6: int) -> str:
    """US dollars from micro-dollars: 4 decimals, 6 for amounts under a hundredth of a cent."""
    usd = cost_usd_e6 / 1_000_000
    if cost_usd_e6 and abs(cost_usd_e6) < 100:
        return f"${usd:.6f}"
    return f"${usd:.4f}"


def short_path(path: str, root_dir: str | None) -> str:
    """A path relative to the session's root directory, its end kept if still long."""
    shown = path
    if root_dir is not None and path.startswith("/"):
        normal = posixpath.normpath(path)
        if normal == root_dir:
            shown = "."
        elif normal.startswith(root_dir + "/"):
            shown = normal[len(root_dir) + 1 :]
    if len(shown) > FILE_CHARS:
        shown = "…" + shown[-(FILE_CHARS - 1) :]
    return shown


def files_text(paths: Sequence[str], root_dir: str | None) -> str:
    shown = [short_path(path, root_dir) for path in paths[:FILES_SHOWN]]
    more = len(paths) - FILES_SHOWN
    return ", ".join(shown) + (f" +{more} more" if more > 0 else "")


def _tokens_text(tokens_in: int | None, tokens_out: int | None) -> str | None:
    if tokens_in is None and tokens_out is None:
        return None
    return f"{format_tokens(tokens_in or 0)} in / {format_tokens(tokens_out or 0)} out"


def orphan_reason(span: SpanView) -> str:
    if span.started_at_ms is None:
        return "orphaned: no start"
    if span.ended_at_ms is None:
        return "orphaned: no end"
    return span.status


# -- rich ------------------------------------------------------------------------

SEP = " · "


def span_label(node: SpanNode, root_dir: str | None) -> Text:
    """One span's line: tool, status, duration (lead time), tokens, cost, subtree, files."""
    span = node.span
    text = Text()
    text.append(span.tool or "?", style="bold cyan")
    if span.orphaned:
        text.append(SEP)
        text.append(orphan_reason(span), style="bold red")
    else:
        text.append(SEP)
        text.append("done", style="green")
    duration = span.duration_ms
    if duration is not None:
        text.append(SEP)
        text.append(format_duration(duration), style="yellow")
        # With both hooks seen, lead time is the duration; show it when it says more.
        lead = None if span.lead_time_ms is None else format_duration(span.lead_time_ms)
        if lead is not None and lead != format_duration(duration):
            text.append(f" (lead {lead})", style="dim")
    tokens = _tokens_text(span.tokens_in, span.tokens_out)
    if tokens is not None:
        text.append(SEP + tokens)
    if span.cost_usd_e6 is not None:
        text.append(SEP)
        text.append(format_cost(span.cost_usd_e6), style="magenta")
    if node.children:
        subtree = []
        if span.subtree_token_count is not None:
            subtree.append(f"{format_tokens(span.subtree_token_count)} tokens")
        if span.subtree_cost_usd_e6 is not None:
            subtree.append(format_cost(span.subtree_cost_usd_e6))
        if subtree:
            text.append(SEP)
            text.append("subtree " + " ".join(subtree), style="bold magenta")
    if span.paths:
        text.append(SEP)
        text.append(files_text(span.paths, root_dir), style="blue")
    return text


def session_label(tree: SessionTree, extra: Sequence[str] = (), *, compact: bool = False) -> Text:
    """The tree's top line: the session and its totals, `extra` figures first.

    `compact` (the live view) shortens the id and keeps the span count and cost.
    """
    text = Text()
    text.append("session ", style="bold")
    text.append(tree.session_id[:8] if compact else tree.session_id, style="bold")
    orphaned = f" ({tree.orphaned} orphaned)" if tree.orphaned else ""
    figures = [*extra, f"{tree.spans} spans{orphaned}"]
    if not compact and tree.started_at_ms is not None and tree.ended_at_ms is not None:
        figures.append(format_duration(max(0, tree.ended_at_ms - tree.started_at_ms)))
    tokens = _tokens_text(tree.tokens_in, tree.tokens_out)
    if not compact and tokens is not None:
        figures.append(tokens)
    if tree.cost_usd_e6 is not None:
        figures.append(format_cost(tree.cost_usd_e6))
    text.append(SEP + SEP.join(figures))
    if not compact and tree.root_dir is not None:
        text.append(f"\nfiles under {tree.root_dir}", style="dim")
    return text


def render_tree(
    tree: SessionTree, *, max_lines: int | None = None, title: Text | None = None
) -> Tree:
    """The session as a rich Tree.

    With `max_lines` (the live view of a growing session), every span takes
    one line, cut to the width, and only the most recent top-level spans (with
    everything under them) that fit are shown, after a line counting the ones
    left out.
    """
    one_line = max_lines is not None
    label = title if title is not None else session_label(tree)
    top = Tree(_fit(label, one_line), guide_style="dim")
    roots = list(tree.roots)
    if max_lines is not None:
        roots = _latest_fitting(roots, max(1, max_lines - label.plain.count("\n") - 1))
        hidden = len(tree.roots) - len(roots)
        if hidden:
            earlier = sum(node.size() for node in tree.roots[:hidden])
            top.add(Text(f"… {earlier} earlier spans", style="dim"))
    for node in roots:
        _add(top, node, tree.root_dir, one_line)
    if not tree.roots:
        top.add(Text("no tool spans (yet)", style="dim"))
    return top


def _fit(text: Text, one_line: bool) -> Text:
    if one_line:
        text.no_wrap = True
        text.overflow = "ellipsis"
    return text


def _latest_fitting(roots: list[SpanNode], budget: int) -> list[SpanNode]:
    if sum(node.size() for node in roots) <= budget:
        return roots
    kept: list[SpanNode] = []
    used = 1  # the line counting the spans left out
    for node in reversed(roots):
        size = node.size()
        if kept and used + size > budget:
            break
        kept.append(node)
        used += size
    kept.reverse()
    return kept


def _add(parent: Tree, node: SpanNode, root_dir: str | None, one_line: bool) -> None:
    branch = parent.add(_fit(span_label(node, root_dir), one_line))
    for child in node.children:
        _add(branch, child, root_dir, one_line)


def render_sessions(trees: Sequence[tuple[Text, SessionTree]], height: int) -> RenderableType:
    """Several sessions one under the other, each cut to its share of `height` lines."""
    if not trees:
        return Text("no sessions yet", style="dim")
    share = max(3, height // len(trees))
    return Group(*(render_tree(tree, max_lines=share, title=title) for title, tree in trees))


# -- JSON --------------------------------------------------------------------------


def tree_json(tree: SessionTree) -> dict[str, Any]:
    """The session as one nested JSON document: totals, then `spans` with `children`."""
    return {
        "session_id": tree.session_id,
        "spans": tree.spans,
        "orphaned": tree.orphaned,
        "started_at_ms": tree.started_at_ms,
        "ended_at_ms": tree.ended_at_ms,
        "tokens_in": tree.tokens_in,
        "tokens_out": tree.tokens_out,
        "cost_usd_e6": tree.cost_usd_e6,
        "cost_usd": _usd(tree.cost_usd_e6),
        "root_dir": tree.root_dir,
        "roots": [_node_json(node) for node in tree.roots],
    }


def _node_json(node: SpanNode) -> dict[str, Any]:
    span = node.span
    return {
        "span_id": span.span_id,
        "tool": span.tool,
        "tool_call_id": span.tool_call_id,
        "status": span.status,
        "started_at_ms": span.started_at_ms,
        "ended_at_ms": span.ended_at_ms,
        "duration_ms": span.duration_ms,
        "lead_time_ms": span.lead_time_ms,
        "tokens_in": span.tokens_in,
        "tokens_out": span.tokens_out,
        "reasoning_tokens": span.reasoning_tokens,
        "cost_usd_e6": span.cost_usd_e6,
        "cost_usd": _usd(span.cost_usd_e6),
        "subtree_token_count": span.subtree_token_count,
        "subtree_cost_usd_e6": span.subtree_cost_usd_e6,
        "subtree_cost_usd": _usd(span.subtree_cost_usd_e6),
        "depth": span.depth,
        "parent_span_id": span.parent_span_id,
        "paths": list(span.paths),
        "children": [_node_json(child) for child in node.children],
    }


def _usd(cost_usd_e6: int | None) -> float | None:
    return None if cost_usd_e6 is None else cost_usd_e6 / 1_000_000
