//! Musical keys for key lock: the 24 major and natural-minor keys, parsed from names such as
//! `C`, `F#`, `Bb`, `Am`, `C#m`, `E minor` or `Eb major`.

use std::fmt;
use std::str::FromStr;

use crate::music::chord::ROOT_NAMES;

/// A major or natural-minor key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Key {
    /// Pitch class of the tonic (0 = C).
    pub tonic: u8,
    pub minor: bool,
}

impl Key {
    /// All 24 keys: C major, C minor, C# major, ...
    pub fn all() -> impl Iterator<Item = Key> {
        (0..24).map(|i| Key { tonic: i / 2, minor: i % 2 == 1 })
    }

    /// Whether a MIDI pitch belongs to the key's scale.
    pub fn contains(&self, pitch: u8) -> bool {
        let steps: [u8; 7] = if self.minor { [0, 2, 3, 5, 7, 8, 10] } else { [0, 2, 4, 5, 7, 9, 11] };
        steps.contains(&((pitch + 12 - self.tonic) % 12))
    }
}

/// Which MIDI pitches generation may write: all, or those of `key`.
pub fn allowed_pitches(key: Option<Key>) -> [bool; 128] {
    std::array::from_fn(|p| key.is_none_or(|k| k.contains(p as u8)))
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", ROOT_NAMES[self.tonic as usize], if self.minor { "m" } else { "" })
    }
}

impl FromStr for Key {
    type Err = crate::music::TextError;

    fn from_str(s: &str) -> Result<Key, crate::music::TextError> {
        let text = s.trim();
        let bad = || crate::music::TextError(format!("unknown key {s:?} (examples: C, F#, Bb, Am, C#m, \"E minor\")"));
        let (tonic, rest) = crate::music::chord::parse_root(text).ok_or_else(bad)?;
        let minor = match rest.trim().to_ascii_lowercase().as_str() {
            "" | "maj" | "major" => false,
            "m" | "min" | "minor" => true,
            _ => return Err(bad()),
        };
        Ok(Key { tonic, minor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_hold_their_scales() {
        assert_eq!("Am".parse::<Key>().unwrap(), Key { tonic: 9, minor: true });
        assert_eq!("Bb".parse::<Key>().unwrap(), Key { tonic: 10, minor: false });
        assert_eq!("e minor".parse::<Key>().unwrap(), Key { tonic: 4, minor: true });
        assert_eq!("C# major".parse::<Key>().unwrap().to_string(), "C#");
        assert!("H".parse::<Key>().is_err());
        assert!("Cx".parse::<Key>().is_err());
        let c = Key { tonic: 0, minor: false };
        assert!(c.contains(60) && c.contains(71) && !c.contains(61));
        assert_eq!(Key::all().count(), 24);
    }
}
