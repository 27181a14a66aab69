"""`probscale-edge cache`: the asset and teacher cache."""

from __future__ import annotations

import click

from probscale_edge.cli import main


@main.command()
@click.option("--clear", is_flag=True, help="Delete the cache folder.")
def cache(clear):
    """Show (or clear) the cache: downloaded assets, fine-tuned teachers, probe features, finished stages."""
    import shutil

    from probscale_edge.assets import cache_dir

    d = cache_dir()
    if clear:
        shutil.rmtree(d, ignore_errors=True)
        click.echo(f"removed {d}")
        return
    size = sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) if d.exists() else 0
    click.echo(f"{d}: {size / 1e6:.1f} MB")
