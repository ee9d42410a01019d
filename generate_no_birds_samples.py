"""Write a fixed set of "no birds" clips (ESC-50 + quiet segments) for training to read.

    python generate_no_birds_samples.py --num_samples 500 --esc50_ratio 0.5 \
        --energy_threshold_factor 1.5

Training reads the folder with dataset.load_pregenerated_no_birds=true.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

DEFAULTS = OmegaConf.load(Path(__file__).parent / "config" / "dataset" / "default.yaml")
TOP = OmegaConf.load(Path(__file__).parent / "config" / "bird_classification.yaml")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_samples", type=int, default=500, help="clips to write (500)")
    parser.add_argument("--esc50_ratio", type=float, default=0.5,
                        help="share of clips taken from ESC-50; the rest are quiet segments")
    parser.add_argument("--energy_threshold_factor", type=float,
                        default=DEFAULTS.energy_threshold_factor,
                        help="quiet = band energy below this times the noise floor")
    parser.add_argument("--bird_dir", default=DEFAULTS.bird_data_dir)
    parser.add_argument("--esc50_dir", default="esc-50")
    parser.add_argument("--output_dir", default="augmented_dataset/no_birds/")
    parser.add_argument("--seed", type=int, default=TOP.seed,
                        help="must match training's seed so splits agree")
    parser.add_argument("--sample_rate", type=int, default=DEFAULTS.target_sr,
                        help="the student's sample rate")
    parser.add_argument("--species", nargs="+", default=None,
                        help="species folders to take quiet segments from (default: all)")
    parser.add_argument("--group_regex", default=None, help="as dataset.group_regex")
    parser.add_argument("--split_ratios", type=float, nargs=3, default=None,
                        help="as dataset.split_ratios")
    parser.add_argument("--download_esc50", action="store_true",
                        help="download ESC-50 into --esc50_dir when it is missing")
    parser.add_argument("--num_workers", type=int, default=DEFAULTS.num_workers)
    parser.add_argument("--cache_dir", default=DEFAULTS.cache_dir,
                        help="decoded-audio cache, as dataset.cache_dir")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from common.errors import exit_on_user_error
    from datasets.no_birds_generation import generate_no_birds, species_folders, training_config

    log = logging.getLogger("generate_no_birds_samples")
    with exit_on_user_error(log):
        species = args.species or species_folders(Path(args.bird_dir))
        # Values are set on the composed config, not written into override strings: a
        # folder name with a comma, quote or '=' must not be parsed as Hydra syntax.
        values = {
            "dataset.bird_data_dir": args.bird_dir,
            "dataset.esc50_dir": args.esc50_dir,
            "dataset.allowed_bird_classes": list(species),
            "dataset.energy_threshold_factor": args.energy_threshold_factor,
            "dataset.target_sr": args.sample_rate,
            "dataset.esc50_download": bool(args.download_esc50),
            "dataset.num_workers": args.num_workers,
            "dataset.cache_dir": args.cache_dir,
            "seed": args.seed,
        }
        if args.group_regex:
            values["dataset.group_regex"] = args.group_regex
        if args.split_ratios:
            values["dataset.split_ratios"] = list(args.split_ratios)
        cfg = training_config([])
        for key, value in values.items():
            OmegaConf.update(cfg, key, value, merge=False)
        table, skipped = generate_no_birds(cfg, args.output_dir, args.num_samples,
                                           args.esc50_ratio)
        by_split = table.groupby(["split", "source_type"]).size().to_dict()
        log.info("Wrote %d samples to %s: %s", len(table), args.output_dir, by_split)
        if skipped:
            log.warning("%d input files skipped:", len(skipped))
            for item in skipped:
                log.warning("  %s: %s", item.path, item.reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
