"""``lrpc report JOB``: the static HTML page of a finished explain-dataset job (``lrpc.report``)."""
from __future__ import annotations

import argparse

from ..report import write_report


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="write one static HTML page for an explain-dataset job",
        description="Write JOB/report.html (or -o): the job's settings and summary, the sortable table of its "
                    "images with their heatmaps, and the concept atlas when the job recorded --concepts. The page "
                    "is one file with its pictures inside: it opens offline, without a server.")
    parser.add_argument("job", metavar="JOB", help="a finished explain-dataset job folder")
    parser.add_argument("-o", "--output", metavar="HTML", help="where to write the page (default JOB/report.html)")
    parser.add_argument("--max-images", type=int, default=500, metavar="N",
                        help="rows of the table shown with their image and heatmap (default 500; 0: none; the "
                             "first N by index)")
    parser.add_argument("--all-images", action="store_true", help="show every image (a large page for big jobs)")
    parser.add_argument("--thumbnail", type=int, default=128, metavar="PX", help="picture side in pixels (128)")
    parser.add_argument("--atlas-channels", type=int, default=12, metavar="K",
                        help="channels per concept layer in the atlas (default 12)")
    parser.add_argument("--root", metavar="ROOT", help="the dataset folder, if it moved since the job ran")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = write_report(args.job, args.output, max_images=None if args.all_images else args.max_images,
                        thumbnail=args.thumbnail, atlas_channels=args.atlas_channels, root=args.root)
    print(path)
    return 0
