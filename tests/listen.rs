//! Listen mode (continue the producer's part): the audio-thread recorder's guarantees one by
//! one, and the worker continuing a heard clip from the bar after it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cp_piano::generate::prime;
use cp_piano::generate::GenerationSettings;
use cp_piano::playback::engine::SongEvent;
use cp_piano::playback::recorder::{Heard, HeardNote, ListenState, Recorder, Window};
use cp_piano::playback::shared::Shared;
use cp_piano::playback::song::StoredSong;
use cp_piano::playback::worker::{clip_notes, spawn, Hooks, ModelSource};
use cp_piano::tokens::cp::{Word, TYPE_EOS};

/// A transport of blocks `step` beats long; note events land at beats inside the blocks.
struct Host {
    recorder: Recorder,
    ring: rtrb::Producer<Heard>,
    heard: rtrb::Consumer<Heard>,
    window: Window,
}

enum In {
    On(f64, u8, u8),
    Off(f64, u8),
}

impl Host {
    fn new(window: Window, capacity: usize) -> Host {
        let (ring, heard) = rtrb::RingBuffer::new(capacity);
        let mut host = Host { recorder: Recorder::new(), ring, heard, window };
        host.recorder.set_listen(true, &mut host.ring);
        host
    }

    /// Plays host beats `from..to` in blocks of a quarter beat, with `events` at their beats.
    fn play(&mut self, from: f64, to: f64, events: &[In]) {
        let step = 0.25;
        let mut at = from;
        while at < to - 1e-9 {
            let end = at + step;
            self.recorder.begin_block(true, at, end, self.window, &mut self.ring);
            for e in events {
                match *e {
                    In::On(b, p, v) if b >= at && b < end => self.recorder.note_on(b, p, v, &mut self.ring),
                    In::Off(b, p) if b >= at && b < end => self.recorder.note_off(b, p, &mut self.ring),
                    _ => {}
                }
            }
            self.recorder.end_block(end, &mut self.ring);
            at = end;
        }
    }

    fn stop(&mut self, at: f64) {
        self.recorder.begin_block(false, at, at, self.window, &mut self.ring);
        self.recorder.end_block(at, &mut self.ring);
    }

    fn drain(&mut self) -> Vec<Heard> {
        std::iter::from_fn(|| self.heard.pop().ok()).collect()
    }
}

fn note(start: f64, duration: f64, pitch: u8, velocity: u8) -> Heard {
    Heard::Note(HeardNote { start, duration, pitch, velocity })
}

#[test]
fn a_pass_from_the_window_start_records_its_notes_in_window_beats() {
    // Bars 2-3 (host beats 4..12).
    let mut host = Host::new(Window { start: 4.0, bars: 2 }, 64);
    host.play(0.0, 14.0, &[
        In::On(3.0, 50, 90), // before the window: not heard
        In::Off(4.5, 50),
        In::On(4.5, 60, 100),
        In::Off(5.0, 60),
        In::On(11.0, 64, 80), // still held at the window's end: ends there
        In::On(12.5, 67, 70), // after the window: not heard
        In::Off(13.0, 67),
    ]);
    assert_eq!(host.drain(), vec![note(0.5, 0.5, 60, 100), note(7.0, 1.0, 64, 80), Heard::Done { bars: 2 }]);
    assert_eq!(host.recorder.state, ListenState::Captured);
}

#[test]
fn a_key_struck_again_ends_its_first_note() {
    let mut host = Host::new(Window { start: 0.0, bars: 1 }, 64);
    host.play(0.0, 4.0, &[In::On(0.0, 60, 100), In::On(1.0, 60, 50), In::Off(1.5, 60)]);
    assert_eq!(host.drain(), vec![note(0.0, 1.0, 60, 100), note(1.0, 0.5, 60, 50), Heard::Done { bars: 1 }]);
}

#[test]
fn a_transport_started_inside_the_window_waits_for_the_next_whole_pass() {
    let mut host = Host::new(Window { start: 0.0, bars: 1 }, 64);
    host.play(2.0, 4.5, &[In::On(2.0, 60, 100), In::Off(2.5, 60)]);
    assert!(host.drain().is_empty(), "a pass begun inside the window is not recorded");
    assert_eq!(host.recorder.state, ListenState::Armed);
    host.stop(4.5);
    host.play(0.0, 4.0, &[In::On(1.0, 62, 100), In::Off(2.0, 62)]);
    assert_eq!(host.drain(), vec![note(1.0, 1.0, 62, 100), Heard::Done { bars: 1 }]);
}

#[test]
fn a_stop_or_a_jump_during_a_pass_voids_it() {
    let mut host = Host::new(Window { start: 0.0, bars: 2 }, 64);
    host.play(0.0, 2.0, &[In::On(0.0, 60, 100), In::Off(1.0, 60)]);
    // A seek to beat 20 in the middle of the pass.
    host.play(20.0, 21.0, &[]);
    assert_eq!(host.drain(), vec![note(0.0, 1.0, 60, 100), Heard::Cancel]);
    assert_eq!(host.recorder.state, ListenState::Armed);
    host.stop(21.0);
    host.play(0.0, 1.0, &[In::On(0.5, 61, 100), In::Off(0.75, 61)]);
    host.stop(1.0);
    assert_eq!(host.drain(), vec![note(0.5, 0.25, 61, 100), Heard::Cancel]);
    // The next whole pass is the clip.
    host.play(0.0, 8.0, &[In::On(4.0, 65, 90), In::Off(6.0, 65)]);
    assert_eq!(host.drain(), vec![note(4.0, 2.0, 65, 90), Heard::Done { bars: 2 }]);
}

#[test]
fn a_silent_pass_stays_armed_and_one_arming_captures_once() {
    let mut host = Host::new(Window { start: 0.0, bars: 1 }, 64);
    host.play(0.0, 5.0, &[]);
    assert!(host.drain().is_empty());
    assert_eq!(host.recorder.state, ListenState::Armed);
    host.stop(5.0);
    host.play(0.0, 5.0, &[In::On(0.0, 60, 100), In::Off(1.0, 60)]);
    assert_eq!(host.drain().len(), 2);
    // Captured: another pass records nothing until Listen is switched off and on.
    host.stop(5.0);
    host.play(0.0, 5.0, &[In::On(0.0, 60, 100), In::Off(1.0, 60)]);
    assert!(host.drain().is_empty());
    host.recorder.set_listen(false, &mut host.ring);
    host.recorder.set_listen(true, &mut host.ring);
    host.stop(5.0);
    host.play(0.0, 5.0, &[In::On(0.0, 60, 100), In::Off(1.0, 60)]);
    assert_eq!(host.drain().len(), 2);
}

#[test]
fn a_full_ring_drops_notes_without_waiting_and_the_end_still_arrives() {
    let mut host = Host::new(Window { start: 0.0, bars: 1 }, 2);
    let events: Vec<In> = (0..4).flat_map(|i| [In::On(i as f64, 60 + i as u8, 100), In::Off(i as f64 + 0.5, 60 + i as u8)]).collect();
    host.play(0.0, 4.0, &events);
    assert_eq!(host.recorder.dropped, 2, "two notes did not fit");
    assert_eq!(host.drain(), vec![note(0.0, 0.5, 60, 100), note(1.0, 0.5, 61, 100)]);
    // The pending Done goes out with the next block.
    host.play(4.0, 4.25, &[]);
    assert_eq!(host.drain(), vec![Heard::Done { bars: 1 }]);
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two bars of C major then F major, a chord on each beat.
fn clip() -> Vec<HeardNote> {
    (0..8)
        .flat_map(|beat| {
            let chord: [u8; 3] = if beat < 4 { [60, 64, 67] } else { [65, 69, 72] };
            chord.map(|pitch| HeardNote { start: beat as f64, duration: 0.9, pitch, velocity: 90 })
        })
        .collect()
}

#[test]
fn the_worker_continues_a_heard_clip_from_the_bar_after_it() {
    let settings = GenerationSettings { seed: 3, max_bars: Some(6), ..Default::default() };
    let (producer, mut consumer) = rtrb::RingBuffer::new(1 << 16);
    let (mut heard, heard_by_worker) = rtrb::RingBuffer::new(1024);
    let shared = Arc::new(Shared::default());
    let kept: Arc<Mutex<Vec<StoredSong>>> = Arc::default();
    let sink = kept.clone();
    let for_worker = settings.clone();
    let hooks = Hooks { keep: Box::new(move |song: &StoredSong| sink.lock().unwrap().push(song.clone())), heard: Some(heard_by_worker), ..Hooks::stateless(move || for_worker.clone()) };
    let _worker = spawn(ModelSource::Shipped, shared.clone(), producer, hooks);
    let send_clip = |heard: &mut rtrb::Producer<Heard>| {
        // A voided pass first: its notes must not reach the song.
        heard.push(Heard::Note(HeardNote { start: 0.0, duration: 1.0, pitch: 30, velocity: 20 })).unwrap();
        heard.push(Heard::Cancel).unwrap();
        for n in clip() {
            heard.push(Heard::Note(n)).unwrap();
        }
        heard.push(Heard::Done { bars: 2 }).unwrap();
    };
    send_clip(&mut heard);
    wait_for("the continued song", || kept.lock().unwrap().len() == 1);
    let song = kept.lock().unwrap()[0].clone();

    // The clip, with its recognised chords, is the song's first two bars (the prime).
    let prime: Vec<Word> = prime::from_notes(&clip_notes(&clip()), 2, 120.0).into_iter().take_while(|w| w.0[3] != TYPE_EOS).collect();
    let words: Vec<Word> = song.cp_words.iter().map(|&w| Word(w)).collect();
    assert!(words.len() > prime.len() && words[..prime.len()] == prime[..], "the song begins with the clip's words");
    // The song plays on from bar 3: no note of its own before beat 8, and the first two bars are
    // ready at once.
    assert!(!song.notes.is_empty());
    assert!(song.notes.iter().all(|n| n.start >= 8.0), "a note before bar 3: {:?}", song.notes.first());
    let events: Vec<SongEvent> = std::iter::from_fn(|| consumer.pop().ok()).collect();
    assert!(matches!(events[..2], [SongEvent::Reset { .. }, SongEvent::ReadyUntil(b)] if b == 8.0), "{:?}", &events[..2]);

    // The same clip at the same settings is the same song.
    send_clip(&mut heard);
    wait_for("the second continuation", || kept.lock().unwrap().len() == 2);
    assert_eq!(kept.lock().unwrap()[1], song);
}
