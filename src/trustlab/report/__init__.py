"""Reports: labs contribute section renderers returning blocks; ``render`` writes report.md and report.html."""

from .blocks import Block, Bullets, Heading, Image, Link, Summary, Table, Text, fmt, pct, points, seeds_note
from .render import (combined_blocks, generic_section, headlines, load_results, prefix_images, rebase_images, render,
                     run_blocks, to_html, to_markdown)

__all__ = ["Block", "Bullets", "Heading", "Image", "Link", "Summary", "Table", "Text", "fmt", "pct", "points",
           "seeds_note", "combined_blocks", "generic_section", "headlines", "load_results", "prefix_images",
           "rebase_images", "render", "run_blocks", "to_html", "to_markdown"]
