//! MIDI files: any standard MIDI file into a `Song` (`import`), POP909's folders with their
//! downbeats (`pop909`), a `Song` out as a MIDI file (`export`), and the one lister of the
//! MIDI files under a folder that the data-set builder and the metrics share.

pub mod export;
pub mod import;
pub mod pop909;

/// Every .mid / .midi file under `dir`, in all its sub-folders, sorted.
pub fn midi_files(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("mid") || e.eq_ignore_ascii_case("midi")) {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}
