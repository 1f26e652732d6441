//! The preview voice: silent until a note starts, sound within a few samples of the note-on,
//! a fade after the note-off, fixed polyphony, and no allocation on the audio thread.

#[cfg(not(feature = "assert-no-alloc"))]
#[global_allocator]
static ALLOCATOR: assert_no_alloc::AllocDisabler = assert_no_alloc::AllocDisabler;

use assert_no_alloc::assert_no_alloc;
use cp_piano::playback::engine::NoteOut;
use cp_piano::playback::preview::{Preview, VOICES};

fn render(preview: &mut Preview, events: &[NoteOut], frames: usize) -> Vec<f32> {
    let (mut left, mut right) = (vec![0f32; frames], vec![0f32; frames]);
    assert_no_alloc(|| preview.render(events, &mut left, &mut right));
    assert_eq!(left, right, "the voice is centred");
    left
}

fn energy(x: &[f32]) -> f32 {
    x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32
}

#[test]
fn a_note_sounds_from_its_sample_and_fades_after_its_note_off() {
    let mut preview = Preview::new(48_000.0);
    assert!(render(&mut preview, &[], 512).iter().all(|&x| x == 0.0), "silent with no notes");
    let on = NoteOut::On { offset: 100, pitch: 60, velocity: 0.8, channel: 0 };
    let block = render(&mut preview, &[on], 512);
    assert!(block[..100].iter().all(|&x| x == 0.0), "nothing before the note-on's sample");
    assert!(block[100..108].iter().any(|&x| x.abs() > 1e-3), "sound within a few samples of the note-on");
    assert!(block.iter().all(|x| x.is_finite() && x.abs() < 1.0));
    let held = energy(&render(&mut preview, &[], 4800));
    let off = NoteOut::Off { offset: 0, pitch: 60, channel: 0 };
    render(&mut preview, &[off], 4800);
    let released = energy(&render(&mut preview, &[], 4800));
    assert!(held > 1e-4 && released < held * 1e-3, "the key fades after its note-off ({held} -> {released})");
    // An off on another channel does not end it.
    let mut other = Preview::new(48_000.0);
    render(&mut other, &[on], 512);
    render(&mut other, &[NoteOut::Off { offset: 0, pitch: 60, channel: 3 }], 4800);
    assert!(energy(&render(&mut other, &[], 4800)) > held * 0.1);
}

#[test]
fn polyphony_is_fixed_and_silence_ends_every_voice() {
    let mut preview = Preview::new(44_100.0);
    let chord: Vec<NoteOut> = (0..64).map(|i| NoteOut::On { offset: i, pitch: 30 + i as u8, velocity: 1.0, channel: 0 }).collect();
    let block = render(&mut preview, &chord, 1024);
    assert_eq!(preview.sounding(), VOICES, "at most {VOICES} voices");
    assert!(block.iter().all(|x| x.is_finite()));
    preview.silence();
    assert!(render(&mut preview, &[], 256).iter().all(|&x| x == 0.0));
}
