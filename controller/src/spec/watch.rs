//! Keeps the last good spec while the file changes: watch plus periodic re-read.
