//! Song form: which bars of a song come back. A form is a row of section letters, each
//! section `section_bars` bars long: "ABABCB" with 8-bar sections is verse, chorus, verse,
//! chorus, bridge, chorus. A letter's first section is sampled; a later section with the same
//! letter is that first one again, bar for bar, word for word, and the model is fed those words
//! as if it had written them, so what follows continues from the repeat. Past the last letter
//! the song goes on free until the model ends it.
//!
//! The model does not learn this (issue 8: trained to validation loss 0.62, its songs still
//! repeat no bar); the form gives songs the repeats pop songs have. Only sampled bars are
//! copied: the bars of a prime (a clip to continue, or the bars a regeneration keeps) never are,
//! so a song regenerated from bar N gets new bars where the first pass copied kept ones.
//! Plain data: no model.

/// A song form: section letters and the bars of a section. No letters: every bar is sampled.
/// A saved form is checked as `Form::new` checks it when it is read back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "SavedForm")]
pub struct Form {
    /// Section letters, A-Z.
    letters: String,
    section_bars: u32,
}

/// The form a song gets unless it asks for another.
pub const POP_FORM: &str = "ABABCB";
/// Bars a section has unless a request says otherwise (POP909 phrases are mostly 4 or 8 bars).
pub const SECTION_BARS: u32 = 8;

/// Why a form cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("{0:?}: a form is section letters A-Z (e.g. ABABCB), or \"none\"")]
    Letters(String),
    #[error("{0} bars a section: give 1 to 64")]
    SectionBars(u32),
}

impl Form {
    /// A form from its letters ("none" or "" for a free song) and section length.
    pub fn new(letters: &str, section_bars: u32) -> Result<Form, FormError> {
        if !(1..=64).contains(&section_bars) {
            return Err(FormError::SectionBars(section_bars));
        }
        let letters = letters.trim();
        let letters = if letters.eq_ignore_ascii_case("none") { "" } else { letters };
        if !letters.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(FormError::Letters(letters.to_string()));
        }
        Ok(Form { letters: letters.to_ascii_uppercase(), section_bars })
    }

    /// No repeats: every bar sampled (what songs saved before forms existed were made with).
    pub fn free() -> Form {
        Form { letters: String::new(), section_bars: SECTION_BARS }
    }

    /// `POP_FORM` in sections of `SECTION_BARS`.
    pub fn pop() -> Form {
        Form { letters: POP_FORM.to_string(), section_bars: SECTION_BARS }
    }

    pub fn letters(&self) -> &str {
        &self.letters
    }

    pub fn section_bars(&self) -> u32 {
        self.section_bars
    }

    /// The bar (0-based) that bar `bar` repeats, if any: the same bar of the first earlier
    /// section with the same letter whose bar is at or after `first_sampled` (bars before it were
    /// not sampled and are never copied).
    pub fn source_bar(&self, bar: u32, first_sampled: u32) -> Option<u32> {
        let section = (bar / self.section_bars) as usize;
        let within = bar % self.section_bars;
        let letter = *self.letters.as_bytes().get(section)?;
        self.letters.as_bytes()[..section]
            .iter()
            .enumerate()
            .filter(|&(_, &l)| l == letter)
            .map(|(j, _)| j as u32 * self.section_bars + within)
            .find(|&source| source >= first_sampled)
    }
}

/// A form as saved (a song's settings in a project), before it is checked.
#[derive(serde::Deserialize)]
struct SavedForm {
    letters: String,
    section_bars: u32,
}

impl TryFrom<SavedForm> for Form {
    type Error = FormError;
    fn try_from(saved: SavedForm) -> Result<Form, FormError> {
        Form::new(&saved.letters, saved.section_bars)
    }
}

impl Default for Form {
    fn default() -> Form {
        Form::pop()
    }
}

impl std::fmt::Display for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.letters.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{} ({} bars a section)", self.letters, self.section_bars)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_section_repeats_the_first_with_its_letter_bar_for_bar() {
        let form = Form::new("ABAB", 4).unwrap();
        assert_eq!((0..8).map(|b| form.source_bar(b, 0)).collect::<Vec<_>>(), vec![None; 8]);
        assert_eq!((8..16).map(|b| form.source_bar(b, 0)).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5, 6, 7].map(Some));
        // Past the letters the song is free.
        assert_eq!(form.source_bar(16, 0), None);
    }

    #[test]
    fn bars_before_the_first_sampled_one_are_never_copied() {
        let form = Form::new("AAA", 2).unwrap();
        // Bars 0-2 primed, bar 3 the first sampled: the second A's bar 3 is sampled; in the third
        // A, bar 4 would repeat primed bars (0, 2) and is sampled, and bar 5 repeats bar 3.
        assert_eq!(form.source_bar(2, 3), None);
        assert_eq!(form.source_bar(3, 3), None);
        assert_eq!(form.source_bar(4, 3), None);
        assert_eq!(form.source_bar(5, 3), Some(3));
        // Only bar 0 primed: bar 2 is sampled, bar 3 repeats bar 1, and bar 4 repeats bar 2
        // (the first A's bar 0 was not sampled, the second A's was).
        assert_eq!(form.source_bar(2, 1), None);
        assert_eq!(form.source_bar(3, 1), Some(1));
        assert_eq!(form.source_bar(4, 1), Some(2));
        assert_eq!(form.source_bar(5, 1), Some(1));
    }

    #[test]
    fn a_free_form_copies_nothing() {
        for form in [Form::free(), Form::new("none", 8).unwrap(), Form::new("", 8).unwrap()] {
            assert!((0..200).all(|b| form.source_bar(b, 0).is_none()));
        }
    }

    #[test]
    fn a_saved_form_reads_back_and_a_damaged_one_is_refused() {
        let form = Form::new("AABA", 4).unwrap();
        let text = serde_json::to_string(&form).unwrap();
        assert_eq!(serde_json::from_str::<Form>(&text).unwrap(), form);
        let zero = serde_json::from_str::<Form>(r#"{"letters":"AB","section_bars":0}"#).unwrap_err();
        assert!(zero.to_string().contains("0 bars a section"), "{zero}");
        let letters = serde_json::from_str::<Form>(r#"{"letters":"A1","section_bars":8}"#).unwrap_err();
        assert!(letters.to_string().contains("section letters A-Z"), "{letters}");
    }

    #[test]
    fn bad_forms_are_clear_errors() {
        assert_eq!(Form::new("AB-A", 8), Err(FormError::Letters("AB-A".into())));
        assert_eq!(Form::new("AB", 0), Err(FormError::SectionBars(0)));
        assert_eq!(Form::new("ab", 4).unwrap().letters(), "AB");
    }
}
