//! Progress from a prediction's `logs`: image models print tqdm-style lines
//! such as `  50%|█████     | 2/4 [00:00<00:00, 5.2it/s]`; the latest
//! percentage is the progress. Models that print none report no progress.

/// The latest tqdm percentage in `logs`, as a fraction from 0 to 1.
pub fn latest(logs: &str) -> Option<f32> {
    // tqdm rewrites its line with `\r`; other models end lines with `\n`.
    logs.split(['\n', '\r']).rev().find_map(percent)
}

/// The percentage of one tqdm line (`  50%|…`), if it is one.
fn percent(line: &str) -> Option<f32> {
    let (head, _) = line.split_once("%|")?;
    let digits = head.trim_start();
    let value: u8 = digits.parse().ok().filter(|v| *v <= 100)?;
    Some(f32::from(value) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_tqdm_percentage_wins() {
        let logs = "Using seed: 42\n  0%|          | 0/4 [00:00<?, ?it/s]\n 25%|██▌       | 1/4 [00:00<00:01, 5.20it/s]\n 50%|█████     | 2/4 [00:00<00:00, 5.2it/s]\n";
        assert_eq!(latest(logs), Some(0.5));
        assert_eq!(
            latest("\r 75%|███████▌  | 3/4\r100%|██████████| 4/4 [00:01<00:00]"),
            Some(1.0)
        );
    }

    #[test]
    fn lines_that_are_not_progress_give_none() {
        assert_eq!(latest(""), None);
        assert_eq!(latest("Loading weights\nDone in 2.1s (50% faster)"), None);
        assert_eq!(latest("150%|bogus"), None);
        assert_eq!(latest("abc%|x"), None);
    }
}
