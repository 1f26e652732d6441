//! Real data: every 4/4 POP909 song survives CP and REMI encode -> decode. Skips with a message
//! where ../shared is absent.

mod common;

use cp_piano::music::grid::Grid;
use cp_piano::midi::pop909;
use cp_piano::tokens::round_trip::RoundTrip;
use cp_piano::tokens::{cp, remi};
use rayon::prelude::*;

#[test]
fn pop909_round_trip_keeps_99_percent_of_notes() {
    let Some(root) = common::pop909_root() else { return };
    let (ids, refused) = pop909::four_four_songs(&root).unwrap();
    assert_eq!(ids.len(), 857);
    assert_eq!(refused.len(), 52);
    let ids: Vec<String> = ids.into_iter().collect();
    let (cp_total, remi_total) = ids
        .par_iter()
        .map(|id| {
            let song = pop909::load_song(&pop909::song_dir(&root, id)).unwrap_or_else(|e| panic!("{id}: {e}"));
            let grid = Grid::from_song(&song);
            let by_cp = RoundTrip::compare(&song, &cp::decode(&cp::encode(&grid)).grid.to_song());
            let by_remi = RoundTrip::compare(&song, &remi::decode(&remi::encode(&grid)).grid.to_song());
            (by_cp, by_remi)
        })
        .reduce(
            || (RoundTrip::default(), RoundTrip::default()),
            |mut a, b| {
                a.0.add(b.0);
                a.1.add(b.1);
                a
            },
        );
    println!("POP909 CP round trip over {} songs: {}", ids.len(), cp_total.summary());
    println!("POP909 REMI round trip over {} songs: {}", ids.len(), remi_total.summary());
    assert!(cp_total.kept() >= 0.99, "CP kept {:.4}", cp_total.kept());
    assert!(remi_total.kept() >= 0.99, "REMI kept {:.4}", remi_total.kept());
}
