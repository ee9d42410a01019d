"""Extract BirdNET V2.4 soft labels (teacher logits) for every window of every training file.

    python extract_soft_labels.py --species_list distillation/species.txt \
        --bird_dir bird_sound_dataset --output_path soft_labels_complete --workers 2

Interrupted runs continue where they stopped (run the same command again); --no-resume
recomputes everything. The folder format is described in distillation/soft_label_records.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("extract_soft_labels")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--species_list", default="distillation/species.txt",
        help="file with one species a line ('Genus species', 'Genus_species' or a BirdNET "
        "label line); '#' starts a comment",
    )
    parser.add_argument("--output_path", default="soft_labels_complete",
                        help="soft-label folder to create or continue")
    parser.add_argument("--bird_dir", default="bird_sound_dataset",
                        help="one folder of recordings per species, named Genus_species")
    parser.add_argument(
        "--no_birds_dir", default="augmented_dataset/no_birds",
        help="pre-generated no-birds samples, labelled too (under 'no_birds/') if the folder "
        "exists",
    )
    parser.add_argument("--hop", type=float, default=1.0, help="seconds between teacher windows")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes, each with its own BirdNET interpreter")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads per worker")
    parser.add_argument("--files_limit", type=int, default=None,
                        help="label at most N files (taken evenly across species)")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="keep records that are still valid (--no-resume recomputes all)")
    parser.add_argument("--lat", type=float, default=None, help="recording site latitude")
    parser.add_argument("--lon", type=float, default=None, help="recording site longitude")
    parser.add_argument("--week", type=int, default=None,
                        help="BirdNET week of the year, 1..48 (4 a month); default all year")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--num_shards", type=int, default=1,
                        help="split the files into this many shards (a cluster job array)")
    parser.add_argument("--shard_index", type=int, default=0,
                        help="which shard this run labels, 0..num_shards-1; it is written to "
                        "<output_path>/shards/shard-<i>-of-<K>/")
    parser.add_argument("--unlabelled_dir", action="append", default=[],
                        help="a folder of any audio (soundscapes, other species, noise) to "
                        "label too, under 'unlabelled/<folder name>/'; repeat for several")
    parser.add_argument("--store_all_logits", action="store_true",
                        help="also store the logits of all 6522 BirdNET classes (float16, "
                        "13 KB a window); BirdNET's 1024-d embedding is always stored")
    parser.add_argument("--views", type=int, default=0,
                        help="label K augmented views of every window (mixes of two windows, "
                        "background, gain, shift), labelled by BirdNET on the mixed audio")
    parser.add_argument("--view_pitch_semitones", type=float, default=0.0,
                        help="move each view's window in pitch (and tempo) by up to this "
                        "many semitones, up or down (0-12; 0 = never)")
    parser.add_argument("--view_partner_prob", type=float, default=1.0,
                        help="chance that a view mixes in a window of another file")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the views (the same seed gives the same views)")
    parser.add_argument("--cache_dir", default=".cache/audio",
                        help="decoded 48 kHz audio for --views is cached here")
    parser.add_argument("--merge_shards", action="store_true",
                        help="combine the finished shards in --output_path into one folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from birdnet.species_names import UnknownSpeciesError, read_species_list
    from common.safe_paths import StorageError
    from datasets.split_manifest import DatasetError
    from distillation.shards import ShardError, check_shard, merge_shards, shard_dir
    from distillation.soft_labels import ExtractionError, Location, extract_soft_labels
    from distillation.views import ViewError

    if args.merge_shards:
        try:
            merge_shards(args.output_path)
        except ShardError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    try:
        check_shard(args.num_shards, args.shard_index)
        if (args.lat is None) != (args.lon is None):
            raise ExtractionError("--lat and --lon go together: give both or neither")
        if args.week is not None and args.lat is None:
            raise ExtractionError("--week needs --lat and --lon")
        location = (
            Location(args.lat, args.lon, -1 if args.week is None else args.week)
            if args.lat is not None
            else None
        )
        if not Path(args.species_list).is_file():
            raise ExtractionError(f"Species list '{args.species_list}' not found")
        sharded = args.num_shards > 1
        output = shard_dir(args.output_path, args.shard_index, args.num_shards) if sharded \
            else args.output_path
        summary = extract_soft_labels(
            read_species_list(args.species_list),
            output,
            args.bird_dir,
            no_birds_dir=args.no_birds_dir,
            hop=args.hop,
            workers=args.workers,
            threads=args.threads,
            files_limit=args.files_limit,
            resume=args.resume,
            location=location,
            progress=not args.no_progress,
            shard=(args.shard_index, args.num_shards) if sharded else None,
            unlabelled_dirs=args.unlabelled_dir,
            store_all_logits=args.store_all_logits,
            views=args.views,
            seed=args.seed,
            cache_dir=args.cache_dir,
            view_pitch_semitones=args.view_pitch_semitones,
            view_partner_prob=args.view_partner_prob,
        )
    except (UnknownSpeciesError, ExtractionError, DatasetError, ShardError, ViewError,
            StorageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if summary.failed:
        log.warning("%d files could not be used (listed in %s/metadata.json):",
                    len(summary.failed), args.output_path)
        for failure in summary.failed:
            log.warning("  %s: %s", failure["path"], failure["reason"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
