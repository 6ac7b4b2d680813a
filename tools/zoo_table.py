"""Regenerate the README's model-zoo table and the metafiles from rows.

    python tools/zoo_table.py results/*.json [--readme README.md] \
        [--table results/README_zoo_table.md] [--check]

Reads the rows ``tools/benchmark.py --row`` wrote and renders
(:mod:`mmdet3d_vitis.deploy.zoo`):

* the model-zoo table block (with the commands that produced each row)
  into ``--table`` and, in place, between the ``<!-- zoo-table:start -->``
  and ``<!-- zoo-table:end -->`` markers of ``--readme`` (skipped, with a
  note, when the README has no markers yet);
* one mmdet3d-style ``metafile.yml`` per config folder of the rows.

``--check`` writes nothing and exits 1 if any of those files differs from
what the rows give.
"""
import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from mmdet3d_vitis.cli import run_cli  # noqa: E402
from mmdet3d_vitis.deploy.zoo import (TABLE_END, TABLE_START,  # noqa: E402
                                      load_rows, render_metafiles,
                                      render_table, replace_block,
                                      write_text)

DEFAULT_TABLE = osp.join('results', 'README_zoo_table.md')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('rows', nargs='+', help='zoo row JSON files')
    parser.add_argument('--readme', default=osp.join(REPO, 'README.md'),
                        help='README whose zoo block is rewritten')
    parser.add_argument('--table', default=osp.join(REPO, DEFAULT_TABLE),
                        help='file that holds the generated block alone')
    parser.add_argument('--root', default=REPO,
                        help='repository root the metafile paths (the '
                        'rows\' config folders) are relative to')
    parser.add_argument('--check', action='store_true',
                        help='compare instead of writing; exit 1 on a '
                        'difference')
    return parser.parse_args(argv)


def outputs(rows_paths: Sequence[str], readme: Optional[str], table: str,
            root: str) -> dict:
    """``{path: expected text}`` of every generated file."""
    rows = load_rows(rows_paths)
    block = render_table(rows)
    out = {table: block}
    if readme and osp.isfile(readme):
        with open(readme) as f:
            text = f.read()
        if TABLE_START in text and TABLE_END in text:
            out[readme] = replace_block(text, block)
        else:
            print(f'{readme} has no {TABLE_START} / {TABLE_END} markers: '
                  f'paste {table} there')
    for rel, text in render_metafiles(rows).items():
        out[osp.join(root, rel)] = text
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    expected = outputs(args.rows, args.readme, args.table, args.root)
    stale = []
    for path, text in expected.items():
        have = open(path).read() if osp.isfile(path) else None
        if args.check:
            if have != text:
                stale.append(path)
        elif have != text:
            write_text(path, text)
            print(f'wrote {path}')
        else:
            print(f'unchanged {path}')
    if args.check:
        for path in stale:
            print(f'out of date: {path}')
        if stale:
            sys.exit(1)
        print('all generated files are up to date')
    return 0


if __name__ == '__main__':
    run_cli(main)
