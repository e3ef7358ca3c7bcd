//! Renderers: `(&Plan, &Style) -> String` for text, Markdown and JSON. Pure; no I/O.
