//! Data sets: songs turned into token sequences (CP words or REMI tokens), split by song into
//! train and validation, stored in one compact binary file.
//!
//! File layout (little-endian): magic `CPPIANO\0`, format version (u32), header length (u32),
//! the header as JSON (representation, vocabulary, songs with split and offsets, skipped files),
//! then the tokens as u16: `width` ids per step (7 for CP words, 1 for REMI), songs back to back.
//! The split is a hash of the song's name (about 5 % validation), so it is stable across runs and
//! machines. Building is parallel and deterministic (songs keep the order of their sorted paths).

use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a data set could not be read, written or built.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{}: cannot {what}: {error}", path.display())]
    Io { path: PathBuf, what: &'static str, error: std::io::Error },
    /// The file is not a usable data set, and why.
    #[error("{}: not a usable CP Piano data set: {why}", path.display())]
    Unusable { path: PathBuf, why: String },
    /// Bytes that are not a data set (no file name known).
    #[error("{0}")]
    Format(String),
    #[error("{0}")]
    Import(#[from] ImportError),
    #[error("no usable songs ({0} skipped)")]
    NoSongs(usize),
}

type Result<T> = std::result::Result<T, DatasetError>;

fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> DatasetError + 'a {
    move |error| DatasetError::Io { path: path.to_path_buf(), what, error }
}
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::music::grid::Grid;
use crate::midi::import::{import_file, ImportError};
use crate::music::song::Song;
use crate::midi::pop909;
use crate::tokens::{cp, remi};

const MAGIC: &[u8; 8] = b"CPPIANO\0";
/// Version of the file layout; bumped when it changes.
pub const FORMAT_VERSION: u32 = 1;
/// Per mille of songs that go to validation.
const VALIDATION_PER_MILLE: u64 = 50;

/// The token representation of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Representation {
    Cp,
    Remi,
}

impl Representation {
    /// Token ids per step.
    pub fn width(self) -> usize {
        match self {
            Representation::Cp => cp::FAMILIES,
            Representation::Remi => 1,
        }
    }

    /// (name, size) of each token family.
    pub fn vocabulary(self) -> Vec<(String, usize)> {
        match self {
            Representation::Cp => cp::FAMILY_NAMES.iter().zip(cp::FAMILY_SIZES).map(|(n, s)| (n.to_string(), s)).collect(),
            Representation::Remi => vec![("remi".to_string(), remi::VOCAB_SIZE)],
        }
    }

    /// Encodes a quantised song, flattened to `width` ids per step.
    pub fn encode(self, grid: &Grid) -> Vec<u16> {
        match self {
            Representation::Cp => cp::encode(grid).iter().flat_map(|w| w.0).collect(),
            Representation::Remi => remi::encode(grid),
        }
    }
}

/// Train or validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Valid,
}

/// The split of a song, from a hash (FNV-1a) of its name.
pub fn split_of(name: &str) -> Split {
    let hash = name.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    if hash % 1000 < VALIDATION_PER_MILLE {
        Split::Valid
    } else {
        Split::Train
    }
}

/// One song's entry in the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SongEntry {
    pub name: String,
    pub split: Split,
    /// First step of the song in the token data.
    pub offset: usize,
    /// Number of steps.
    pub len: usize,
}

/// A file that did not make it into the data set, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    representation: Representation,
    /// (family name, size) pairs.
    vocabulary: Vec<(String, usize)>,
    width: usize,
    songs: Vec<SongEntry>,
    skipped: Vec<Skipped>,
}

/// A tokenised data set in memory.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub representation: Representation,
    pub songs: Vec<SongEntry>,
    pub skipped: Vec<Skipped>,
    /// All songs' tokens, `width` ids per step.
    pub tokens: Vec<u16>,
}

impl Dataset {
    /// Token ids per step.
    pub fn width(&self) -> usize {
        self.representation.width()
    }

    /// The flattened tokens of one song.
    pub fn song_tokens(&self, song: &SongEntry) -> &[u16] {
        let w = self.width();
        &self.tokens[song.offset * w..(song.offset + song.len) * w]
    }

    /// Songs of one split.
    pub fn split(&self, split: Split) -> impl Iterator<Item = &SongEntry> {
        self.songs.iter().filter(move |s| s.split == split)
    }

    /// Writes the file atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let header = Header {
            representation: self.representation,
            vocabulary: self.representation.vocabulary(),
            width: self.width(),
            songs: self.songs.clone(),
            skipped: self.skipped.clone(),
        };
        let json = serde_json::to_vec(&header).map_err(|e| DatasetError::Format(e.to_string()))?;
        let mut bytes = Vec::with_capacity(16 + json.len() + self.tokens.len() * 2);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&json);
        for t in &self.tokens {
            bytes.extend_from_slice(&t.to_le_bytes());
        }
        write_atomically(path, &bytes)
    }

    /// Reads a data-set file, checking magic, version, vocabulary and sizes.
    pub fn load(path: &Path) -> Result<Dataset> {
        let bytes = std::fs::read(path).map_err(io(path, "read"))?;
        Dataset::from_bytes(&bytes).map_err(|e| DatasetError::Unusable { path: path.to_path_buf(), why: e.to_string() })
    }

    /// Reads a data set from the bytes of its file (see `load`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Dataset> {
        let bad = |why: &str| Err(DatasetError::Format(why.to_string()));
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return bad("missing the CPPIANO magic bytes");
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != FORMAT_VERSION {
            return bad(&format!("format version {version}, this build reads version {FORMAT_VERSION}: rebuild it with `cp-piano dataset`"));
        }
        let len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
        let Some(json) = bytes.get(16..16 + len) else { return bad("header is truncated") };
        let Ok(header) = serde_json::from_slice::<Header>(json) else { return bad("header is not valid JSON") };
        if header.vocabulary != header.representation.vocabulary() || header.width != header.representation.width() {
            return bad("its vocabulary differs from this build's");
        }
        let data = &bytes[16 + len..];
        if !data.len().is_multiple_of(2) {
            return bad("token data has an odd number of bytes");
        }
        let tokens: Vec<u16> = data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        let steps = tokens.len() / header.width;
        if header.songs.iter().any(|s| s.offset.checked_add(s.len).is_none_or(|end| end > steps)) {
            return bad("a song runs past the end of the token data (truncated file?)");
        }
        Ok(Dataset { representation: header.representation, songs: header.songs, skipped: header.skipped, tokens })
    }
}

/// Writes bytes to `path` through a temporary file in the same folder, so a crash never leaves a
/// half-written file under the real name.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir, "create the folder"))?;
    }
    let tmp = path.with_extension(format!("{}.tmp", path.extension().map(|e| e.to_string_lossy()).unwrap_or_default()));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp, "create"))?;
        f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io(&tmp, "write"))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path, "rename into place"))?;
    Ok(())
}

/// Where songs come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Every .mid/.midi file under a folder (recursively).
    MidiFolder(PathBuf),
    /// The POP909 data set root (index.csv and song folders).
    Pop909(PathBuf),
}

/// One song to import.
#[derive(Debug, Clone)]
enum Job {
    Midi { name: String, path: PathBuf },
    Pop909 { name: String, dir: PathBuf },
}

impl Source {
    /// The songs to import (sorted), and songs refused before import (POP909 meters).
    fn jobs(&self) -> Result<(Vec<Job>, Vec<Skipped>)> {
        match self {
            Source::MidiFolder(dir) => {
                let files = crate::midi::midi_files(dir).map_err(io(dir, "read the folder"))?;
                let jobs = files
                    .into_iter()
                    .map(|path| {
                        let name = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().to_string();
                        Job::Midi { name, path }
                    })
                    .collect();
                Ok((jobs, Vec::new()))
            }
            Source::Pop909(root) => {
                let (kept, refused) = pop909::four_four_songs(root)?;
                let jobs = kept
                    .into_iter()
                    .map(|id| Job::Pop909 { dir: pop909::song_dir(root, &id), name: id })
                    .collect();
                let skipped = refused.into_iter().map(|(name, reason)| Skipped { name, reason }).collect();
                Ok((jobs, skipped))
            }
        }
    }
}

impl Job {
    fn name(&self) -> &str {
        match self {
            Job::Midi { name, .. } | Job::Pop909 { name, .. } => name,
        }
    }

    fn load(&self) -> std::result::Result<Song, ImportError> {
        match self {
            Job::Midi { path, .. } => import_file(path),
            Job::Pop909 { dir, .. } => pop909::load_song(dir),
        }
    }
}

/// Imports every song of `source` and tokenises it. Files that fail are listed in `skipped` with
/// their reason; the build still finishes. `progress` shows a progress bar on stderr.
pub fn build(source: &Source, representation: Representation, progress: bool) -> Result<Dataset> {
    let (jobs, mut skipped) = source.jobs()?;
    let bar = if progress { ProgressBar::new(jobs.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} songs {elapsed_precise} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix("tokenising");
    let results: Vec<(String, std::result::Result<Vec<u16>, ImportError>)> = jobs
        .par_iter()
        .map(|job| {
            let tokens = job.load().map(|song| representation.encode(&Grid::from_song(&song)));
            bar.inc(1);
            (job.name().to_string(), tokens)
        })
        .collect();
    bar.finish_and_clear();
    let width = representation.width();
    let mut dataset = Dataset { representation, songs: Vec::new(), skipped: Vec::new(), tokens: Vec::new() };
    for (name, result) in results {
        match result {
            Ok(tokens) => {
                dataset.songs.push(SongEntry {
                    split: split_of(&name),
                    offset: dataset.tokens.len() / width,
                    len: tokens.len() / width,
                    name,
                });
                dataset.tokens.extend(tokens);
            }
            Err(e) => skipped.push(Skipped { name, reason: e.to_string() }),
        }
    }
    dataset.skipped = skipped;
    if dataset.songs.is_empty() {
        return Err(DatasetError::NoSongs(dataset.skipped.len()));
    }
    Ok(dataset)
}
