"""Figures for the Dagster UI: a matplotlib figure becomes an inline PNG in markdown metadata."""

import base64
import io

import dagster as dg
import matplotlib

matplotlib.use("Agg")  # no display in a run process

import matplotlib.pyplot as plt  # noqa: E402 (the backend is chosen first)


def figure(width: float = 6.0, height: float = 3.5, *, cols: int = 1):
    """A new figure and its axes (one row of `cols`), sized for the asset details panel."""
    return plt.subplots(1, cols, figsize=(width, height), dpi=90)


def markdown_image(fig, title: str) -> dg.MetadataValue:
    """Render and close `fig`; the PNG travels inside the metadata, so no file server is needed."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")


def table(rows: list[dict]) -> dg.MetadataValue:
    """A list of equal-keyed dicts as a markdown table."""
    if not rows:
        raise ValueError("table: no rows")
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(r[k]) for k in keys) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


def _cell(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
