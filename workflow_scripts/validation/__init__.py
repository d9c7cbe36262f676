"""Data validation at the head of the DAG: cheap checks of the files a config points at, before any
expensive job reads them.

- `text`: the training / held-out CSVs (fields, quoting, one record per line, image suffixes, captions)
  and the caption and rewrite files (UTF-8, no empty lines, one line per CSV row), naming file and line.
- `images`: every image the study reads is present and decodable at header level (PNG chunk CRCs,
  JPEG markers and end-of-image; a JPEG without its end marker is decoded at 1/8 scale to tell a
  truncated file from trailing padding), checked in parallel.
- `manifest`: size, mtime, format and dimensions of every checked image; `changed_files` compares a
  manifest with the disk, which is how the workflow notices an image replaced after a run.
- `problems`: the collected problems and how they are reported.
- `cli`: `python -m workflow_scripts.validation.cli {text,images}`.
"""
