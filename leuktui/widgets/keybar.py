"""The key bar: the focused screen's key bindings on the bottom line, drawn as one widget.

It shows what Textual's ``Footer`` shows, in the same colours, but as a single line of text
rather than a widget per key: the footer recomposes its keys whenever focus moves, and styling
those widgets was the largest single cost of painting a screen (about 100 ms of the Runs
screen's first paint with ~20 keys). A click on a key presses it, as with the footer.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import RenderResult
from textual.screen import Screen
from textual.widget import Widget

ALWAYS_SHOWN = ("help", "quit")  # actions the key bar never drops for want of room


class KeyBar(Widget, can_focus=False):
    ALLOW_SELECT = False
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        background: $footer-background;
        color: $footer-foreground;
        .keybar--key {
            color: $footer-key-foreground;
            background: $footer-key-background;
            text-style: bold;
        }
        .keybar--description {
            color: $footer-description-foreground;
            background: $footer-description-background;
        }
        .keybar--separator {
            color: $foreground 20%;
        }
        .keybar--hover {
            background: $block-hover-background;
        }
    }
    """
    COMPONENT_CLASSES = {"keybar--key", "keybar--description", "keybar--separator", "keybar--hover"}

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._keys: list[tuple[int, int, str]] = []  # (start column, end column, key) of what was drawn
        self.hovered: str | None = None  # the key under the mouse

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def _bindings_changed(self, screen: Screen) -> None:
        self.refresh()

    def shown(self) -> tuple[list[tuple[str, str, str, bool]], tuple[str, str, str, bool] | None]:
        """(key, key as displayed, description, enabled) of each binding to show, in order and one
        per action; and the command palette's key, shown at the right."""
        bindings = self.screen.active_bindings
        palette_key = self.app.COMMAND_PALETTE_BINDING
        seen: set[str] = set()
        node_rank: dict = {}  # the focused widget first, then its ancestors, as active_bindings lists them
        entries = []
        for key, active in bindings.items():
            binding = active.binding
            if not binding.show or binding.action in seen or key == palette_key:
                continue
            if not getattr(active.node, "key_shown", lambda _action: True)(binding.action):
                continue  # a key of a part of the screen not in view (a tab's)
            seen.add(binding.action)
            # In the order the node declares them, so a key remapped by keymap.json keeps its place.
            declared = [getattr(b, "action", None) for b in getattr(active.node, "BINDINGS", [])]
            place = declared.index(binding.action) if binding.action in declared else len(declared)
            rank = (node_rank.setdefault(active.node, len(node_rank)), place)
            entries.append((rank, (key, self.app.get_key_display(binding), binding.description, active.enabled)))
        keys = [item for _, item in sorted(entries, key=lambda entry: entry[0])]
        palette = None
        if self.app.ENABLE_COMMAND_PALETTE and palette_key in bindings:
            active = bindings[palette_key]
            palette = (palette_key, self.app.get_key_display(active.binding), active.binding.description, active.enabled)
        return keys, palette

    def render(self) -> RenderResult:
        key_style = self.get_component_rich_style("keybar--key")
        description_style = self.get_component_rich_style("keybar--description")
        separator_style = self.get_component_rich_style("keybar--separator")
        hover_style = self.get_component_rich_style("keybar--hover", partial=True)
        width = self.size.width
        keys, palette = self.shown()
        # Help and quit are always on the line, at the right with the palette: at 80 columns a
        # screen's own keys fill it, and a newcomer must still see how to get help and out.
        kept = [entry for entry in keys if self._action_of(entry[0]) in ALWAYS_SHOWN]
        keys = [entry for entry in keys if entry not in kept]
        right_parts: list[tuple[Text, str]] = []
        for key, display, description, enabled in kept:
            extra = Style(dim=not enabled) + (hover_style if key == self.hovered else Style())
            right_parts.append((Text.assemble((f" {display} ", key_style + extra), (f"{description} ", description_style + extra)), key))
        if palette:
            right_parts.append((Text.assemble((f" {palette[1]} ", key_style), (f"{palette[2]} ", description_style)), palette[0]))
        right = Text.assemble(("▏", separator_style), *(part for part, _ in right_parts)) if right_parts else Text()
        room = width - right.cell_len
        text = Text(no_wrap=True, overflow="crop", end="")
        self._keys = []
        for key, display, description, enabled in keys:
            extra = Style(dim=not enabled) + (hover_style if key == self.hovered else Style())
            part = Text.assemble((f" {display} ", key_style + extra), (f"{description} ", description_style + extra))
            if text.cell_len + part.cell_len > room:
                break  # whole keys only; the help screen and the palette list them all
            self._keys.append((text.cell_len, text.cell_len + part.cell_len, key))
            text.append_text(part)
        if right_parts:
            text.append(" " * max(0, room - text.cell_len))
            start = text.cell_len + 1  # after the separator
            for part, key in right_parts:
                self._keys.append((start, start + part.cell_len, key))
                start += part.cell_len
            text.append_text(right)
        return text

    def _action_of(self, key: str) -> str | None:
        active = self.screen.active_bindings.get(key)
        return active.binding.action if active is not None else None

    def _key_at(self, x: int) -> str | None:
        return next((key for start, end, key in self._keys if start <= x < end), None)

    def on_click(self, event: events.Click) -> None:
        key = self._key_at(event.x)
        if key is not None:
            self.app.simulate_key(key)

    def on_mouse_move(self, event: events.MouseMove) -> None:
        key = self._key_at(event.x)
        if key != self.hovered:
            self.hovered = key
            self.refresh()

    def on_leave(self, event: events.Leave) -> None:
        if self.hovered is not None:
            self.hovered = None
            self.refresh()
