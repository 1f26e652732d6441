//! The inference worker without any plugin format: it loads the shipped model, generates a song
//! into the ring with its timeline markers, restores a saved song without the model's help,
//! reports its status, and exports the song as MIDI.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cp_piano::playback::engine::SongEvent;
use cp_piano::generate::GenerationSettings;
use cp_piano::midi::import::import_file;
use cp_piano::playback::shared::{Shared, Status};
use cp_piano::playback::song::{export_midi, StoredSong};
use cp_piano::playback::worker::{engine_note, spawn, Command, Hooks, ModelSource, Worker};

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The songs a worker finished, in order.
type Kept = Arc<Mutex<Vec<StoredSong>>>;

/// A worker on the shipped model whose regenerations use `settings` and whose finished songs
/// are kept in the returned list; with the consumer end of its ring.
fn keeping_worker(settings: &GenerationSettings) -> (Worker, rtrb::Consumer<SongEvent>, Arc<Shared>, Kept) {
    let (producer, consumer) = rtrb::RingBuffer::new(1 << 16);
    let shared = Arc::new(Shared::default());
    let kept: Kept = Arc::default();
    let sink = kept.clone();
    let for_requests = settings.clone();
    let hooks = Hooks { keep: Box::new(move |song: &StoredSong| sink.lock().unwrap().push(song.clone())), ..Hooks::stateless(move || for_requests.clone()) };
    let worker = spawn(ModelSource::Shipped, shared.clone(), producer, hooks);
    (worker, consumer, shared, kept)
}

#[test]
fn the_worker_generates_restores_and_exports() {
    let settings = GenerationSettings { seed: 5, max_bars: Some(8), ..Default::default() };
    let (worker, mut consumer, shared, kept) = keeping_worker(&settings);
    worker.commands.send(Command::Generate(settings)).unwrap();
    wait_for("the song", || kept.lock().unwrap().len() == 1);
    assert_eq!(shared.status(), Status::Ready);
    assert!(shared.status_text().starts_with("Ready"), "{}", shared.status_text());
    let mut events = Vec::new();
    while let Ok(e) = consumer.pop() {
        events.push(e);
    }
    assert!(matches!(events.first(), Some(SongEvent::Reset { .. })));
    let song = kept.lock().unwrap()[0].clone();
    assert!(!song.notes.is_empty() && song.end <= 32.0);
    let notes: Vec<_> = events.iter().filter_map(|e| if let SongEvent::Note(n) = e { Some(*n) } else { None }).collect();
    assert_eq!(notes, song.notes.iter().map(engine_note).collect::<Vec<_>>());
    // Every note arrives before the marker that declares its beat ready.
    let mut ready = 0.0;
    for e in &events {
        match e {
            SongEvent::ReadyUntil(b) => ready = *b,
            SongEvent::Note(n) => assert!(n.start >= ready, "a note at {} came after ReadyUntil({ready})", n.start),
            _ => {}
        }
    }
    assert_eq!(events.last(), Some(&SongEvent::End(song.end)));

    // Restoring replays the same notes.
    worker.commands.send(Command::Restore(song.clone())).unwrap();
    let mut restored = Vec::new();
    wait_for("the restored song", || {
        while let Ok(e) = consumer.pop() {
            restored.push(e);
        }
        matches!(restored.last(), Some(SongEvent::End(_)))
    });
    let again: Vec<_> = restored.iter().filter_map(|e| if let SongEvent::Note(n) = e { Some(*n) } else { None }).collect();
    assert_eq!(again, song.notes.iter().map(engine_note).collect::<Vec<_>>());

    // A regeneration asked for by the audio thread (an atomic bump) produces another song.
    shared.regenerate_requests.fetch_add(1, Ordering::Relaxed);
    wait_for("the regenerated song", || kept.lock().unwrap().len() == 2);

    let dir = tempfile::tempdir().unwrap();
    let path = export_midi(&song, 97.0, dir.path()).unwrap();
    let midi = import_file(&path).unwrap();
    assert_eq!(midi.notes.len(), song.notes.len());
    assert!((midi.tempos[0].bpm - 97.0).abs() < 0.01);
    drop(worker);
}

#[test]
fn a_missing_weights_folder_is_an_error_status_not_a_crash() {
    let (producer, _consumer) = rtrb::RingBuffer::new(16);
    let shared = Arc::new(Shared::default());
    let worker = spawn(ModelSource::Folder("/no/such/weights".into()), shared.clone(), producer, Hooks::stateless(GenerationSettings::default));
    wait_for("the error status", || shared.status() == Status::Error);
    assert!(shared.status_text().contains("/no/such/weights"), "{}", shared.status_text());
    worker.commands.send(Command::Generate(GenerationSettings::default())).unwrap();
    drop(worker);
}

#[test]
fn a_regenerate_while_the_model_loads_and_a_state_load_are_both_acted_on() {
    let (producer, _consumer) = rtrb::RingBuffer::new(1 << 16);
    let shared = Arc::new(Shared::default());
    let kept: Kept = Arc::default();
    let sink = kept.clone();
    let loads = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let saved: Arc<Mutex<String>> = Arc::default();
    let (l, s) = (loads.clone(), saved.clone());
    let hooks = Hooks {
        keep: Box::new(move |song: &StoredSong| sink.lock().unwrap().push(song.clone())),
        state_loads: Box::new(move || l.load(Ordering::Acquire)),
        saved_song: Box::new(move || s.lock().unwrap().clone()),
        ..Hooks::stateless(|| GenerationSettings { seed: 3, max_bars: Some(4), ..Default::default() })
    };
    let worker = spawn(ModelSource::Shipped, shared.clone(), producer, hooks);
    // Pressed at once, while the model is still loading: not lost.
    shared.regenerate_requests.fetch_add(1, Ordering::Relaxed);
    wait_for("the regenerated song", || kept.lock().unwrap().len() == 1);
    // A state holding a broken song is loaded: the worker notices and writes a new song.
    *saved.lock().unwrap() = "{ not a song".into();
    loads.fetch_add(1, Ordering::AcqRel);
    wait_for("the song for the loaded state", || kept.lock().unwrap().len() == 2);
    drop(worker);
}

#[test]
fn regenerate_from_a_bar_keeps_the_bars_before_and_undo_brings_the_old_song_back() {
    let settings = GenerationSettings { seed: 5, min_bars: 12, max_bars: Some(12), ..Default::default() };
    let (worker, mut consumer, shared, kept) = keeping_worker(&settings);
    let drain = |consumer: &mut rtrb::Consumer<SongEvent>| std::iter::from_fn(|| consumer.pop().ok()).collect::<Vec<_>>();
    worker.commands.send(Command::Generate(settings)).unwrap();
    wait_for("the song", || kept.lock().unwrap().len() == 1);
    drain(&mut consumer);
    let first = kept.lock().unwrap()[0].clone();
    assert_eq!(first.end, 48.0);
    let before = |song: &StoredSong, bar: u32| song.notes.iter().filter(|n| n.start < (bar - 1) as f64 * 4.0).copied().collect::<Vec<_>>();
    let check = |old: &StoredSong, new: &StoredSong, bar: u32| {
        assert_eq!(before(new, bar), before(old, bar), "the notes before bar {bar} are kept");
        let kept_words = cp_piano::tokens::cp::first_bars(&old.cp_words.iter().map(|&w| cp_piano::tokens::cp::Word(w)).collect::<Vec<_>>(), bar - 1).len();
        assert_eq!(new.cp_words[..kept_words], old.cp_words[..kept_words], "and their words");
        assert_ne!(new.cp_words, old.cp_words, "the bars from {bar} on are new");
        assert_eq!(new.settings.seed, old.settings.seed + 1, "at the next seed");
    };

    // From the editor: the live generator regenerates from bar 5.
    shared.request_regenerate_from(5);
    wait_for("the regenerated song", || kept.lock().unwrap().len() == 2);
    let second = kept.lock().unwrap()[1].clone();
    check(&first, &second, 5);
    let events = drain(&mut consumer);
    assert!(matches!(events.first(), Some(SongEvent::Reset { .. })));
    let notes: Vec<_> = events.iter().filter_map(|e| if let SongEvent::Note(n) = e { Some(*n) } else { None }).collect();
    assert_eq!(notes, second.notes.iter().map(engine_note).collect::<Vec<_>>(), "the engine gets the whole new song");

    // Undo plays the first song again.
    shared.undo_requests.fetch_add(1, Ordering::Relaxed);
    wait_for("the undo", || shared.song.lock().unwrap().as_ref() == Some(&first));
    wait_for("the first song's end", || matches!(drain(&mut consumer).last(), Some(SongEvent::End(e)) if *e == first.end));

    // A song restored from a saved state (no live generator) regenerates too, by replaying.
    worker.commands.send(Command::Restore(second.clone())).unwrap();
    wait_for("the restore", || shared.song.lock().unwrap().as_ref() == Some(&second));
    worker.commands.send(Command::RegenerateFrom { bar: 9, seed: second.settings.seed + 1 }).unwrap();
    wait_for("the song regenerated from bar 9", || kept.lock().unwrap().len() == 3);
    check(&second, &kept.lock().unwrap()[2], 9);
    drop(worker);
}

#[test]
fn takes_are_the_songs_their_seeds_give_alone_and_a_picked_take_plays_and_is_kept() {
    let settings = GenerationSettings { seed: 11, max_bars: Some(4), ..Default::default() };
    let (worker, mut consumer, shared, kept) = keeping_worker(&settings);
    shared.request_takes(3);
    wait_for("three takes, the first playing", || shared.takes.lock().unwrap().len() == 3 && kept.lock().unwrap().len() == 1);
    let takes = shared.takes.lock().unwrap().clone();
    assert_eq!(kept.lock().unwrap()[0], takes[0], "take 1 plays first and is kept");
    assert!(takes[0] != takes[1] && takes[1] != takes[2], "three different songs");

    // Picking take 3 plays its notes and keeps it.
    while consumer.pop().is_ok() {}
    shared.pick_take(2);
    wait_for("take 3", || kept.lock().unwrap().len() == 2);
    assert_eq!(kept.lock().unwrap()[1], takes[2]);
    assert_eq!(shared.picked_take.load(Ordering::Relaxed), 2);
    let mut events = Vec::new();
    wait_for("take 3's notes", || {
        while let Ok(e) = consumer.pop() {
            events.push(e);
        }
        matches!(events.last(), Some(SongEvent::End(_)))
    });
    let notes: Vec<_> = events.iter().filter_map(|e| if let SongEvent::Note(n) = e { Some(*n) } else { None }).collect();
    assert_eq!(notes, takes[2].notes.iter().map(engine_note).collect::<Vec<_>>());

    // Take i is the song seed 11 + i gives alone.
    for (i, take) in takes.iter().enumerate() {
        worker.commands.send(Command::Generate(GenerationSettings { seed: 11 + i as u64, ..settings.clone() })).unwrap();
        wait_for("the song alone", || kept.lock().unwrap().len() == 3 + i);
        assert_eq!(kept.lock().unwrap()[2 + i], *take, "take {} differs from seed {} alone", i + 1, 11 + i);
    }
    assert!(shared.takes.lock().unwrap().is_empty(), "a new song ends the takes");
}
