//! `dmap demo`: a synthetic dataset in the schema of NOAA's Global Surface Summary of the Day (GSOD), the data
//! AWS's Distributed Map sample processes, a `monthly_high` job over it (that sample's computation: per month,
//! the hottest station-day), the run, and what it found.
//!
//! The files look like the public dataset's: one per station and year at `YYYY/<STATION>.csv`, an 11-digit
//! station id, all 28 columns, every field double-quoted, station names with a comma (`"CITY, CC"`), observation
//! counts right-aligned in two characters, and the missing markers (`9999.9`, `999.9`, `99.99`) where a reading
//! is missing. A few files are broken on purpose, to show failure handling. The same arguments always give the
//! same bytes: values are integers (tenths, hundredths) from seeded generators, with no float formatting.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use dmap_core::spec::JobSpec;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::DemoArgs;
use crate::backend::embedded_jobs_dir;
use crate::run::{Begin, Outputs, exit_code, print_summary, run_job};

const BUCKET: &str = "dmap-demo";
const PREFIX: &str = "noaa-gsod/";
/// Each station has a file for each of these years (the last station fewer when the file count says so). The
/// help of `--objects` says so too (a test holds it to these numbers).
const FIRST_YEAR: u32 = 2021;
const YEARS: u32 = 4;
/// One file in this many is broken (alternately a row cut short and a date in another format).
const BROKEN_EVERY: u32 = 500;

const HEADER: &str = "\"STATION\",\"DATE\",\"LATITUDE\",\"LONGITUDE\",\"ELEVATION\",\"NAME\",\"TEMP\",\
\"TEMP_ATTRIBUTES\",\"DEWP\",\"DEWP_ATTRIBUTES\",\"SLP\",\"SLP_ATTRIBUTES\",\"STP\",\"STP_ATTRIBUTES\",\"VISIB\",\
\"VISIB_ATTRIBUTES\",\"WDSP\",\"WDSP_ATTRIBUTES\",\"MXSPD\",\"GUST\",\"MAX\",\"MAX_ATTRIBUTES\",\"MIN\",\
\"MIN_ATTRIBUTES\",\"PRCP\",\"PRCP_ATTRIBUTES\",\"SNDP\",\"FRSHTT\"\n";

pub async fn demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    // The demo starts afresh: its dataset, its results and the jobs that made them.
    let bucket_dir = args.data_dir.join(BUCKET);
    for dir in [&bucket_dir, &embedded_jobs_dir(&args.data_dir)] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
    }
    let (objects, days) = (args.objects, args.days);
    let dataset_dir = bucket_dir.join(PREFIX);
    let bytes =
        tokio::task::spawn_blocking(move || generate(&dataset_dir, objects, days)).await??;
    if !args.pool.json {
        println!(
            "generated {objects} station-year files ({} stations, {:.1} MB, up to {days} days each) under {}",
            objects.div_ceil(YEARS),
            bytes as f64 / 1e6,
            bucket_dir.join(PREFIX).display()
        );
    }

    let spec = serde_json::json!({
        "item_reader": { "bucket": BUCKET, "prefix": PREFIX, "suffix": ".csv" },
        "item_batcher": { "max_items_per_batch": 50 },
        "processor": { "kind": "monthly_high", "date_column": "DATE", "value_column": "TEMP", "missing": "9999.9" },
        "tolerated_failure_percentage": 1,
        "result_writer": { "bucket": BUCKET, "prefix": "results/" }
    });
    let spec_path = args.data_dir.join("demo-spec.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)?;
    let job = JobSpec::parse(spec.to_string().as_bytes())?;
    let report = run_job(job, &args.data_dir, &args.pool, Begin::Start).await?;
    print_summary(&report, &Outputs::Dir(&args.data_dir), args.pool.json, None);
    if !args.pool.json {
        let result_path = args.data_dir.join(BUCKET).join(&report.manifest.result);
        let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&result_path)?)?;
        print!("{}", findings(&result));
        println!(
            "the whole result is {}; failed items are listed in {}\nthe job spec is {}; run it again with: dmap run {} --data-dir {}",
            result_path.display(),
            args.data_dir
                .join(BUCKET)
                .join(&report.manifest.failures)
                .display(),
            spec_path.display(),
            spec_path.display(),
            args.data_dir.display()
        );
    }
    Ok(exit_code(report.manifest.status))
}

/// Writes `objects` files, file `i` being station `i / YEARS`'s for year `FIRST_YEAR + i % YEARS`, each with
/// `days` rows (at most the year's days) spread over the year. Returns the bytes written.
fn generate(dir: &Path, objects: u32, days: u32) -> anyhow::Result<u64> {
    for year in FIRST_YEAR..FIRST_YEAR + YEARS.min(objects) {
        std::fs::create_dir_all(dir.join(year.to_string()))?;
    }
    let mut total = 0u64;
    let mut csv = String::new();
    let mut station = Station::new(0);
    for i in 0..objects {
        if i / YEARS != station.number {
            station = Station::new(i / YEARS);
        }
        let year = FIRST_YEAR + i % YEARS;
        let mut rng = StdRng::seed_from_u64(u64::from(i));
        csv.clear();
        csv.push_str(HEADER);
        let length = year_length(year);
        let rows = days.min(length);
        let mut last = String::new();
        for n in 0..rows {
            // Rows spread evenly over the year, so that every month has some even for a few days a file.
            let day = n * length / rows;
            last.clear();
            station.row(&mut last, &mut rng, year, day);
            csv.push_str(&last);
        }
        if i % BROKEN_EVERY == BROKEN_EVERY - 1 {
            if (i / BROKEN_EVERY).is_multiple_of(2) {
                // An upload cut short: the last row again, ending after its tenth comma.
                let cut: Vec<&str> = last.trim_end().split(',').take(10).collect();
                let _ = writeln!(csv, "{}", cut.join(","));
            } else {
                // The last row again, from an export that wrote its date its own way.
                let (month, day) = month_and_day(year, (rows - 1) * length / rows);
                let iso = format!("\"{year}-{month:02}-{day:02}\"");
                csv.push_str(&last.replacen(&iso, &format!("\"{month:02}/{day:02}/{year}\""), 1));
            }
        }
        let path = dir
            .join(year.to_string())
            .join(format!("{}.csv", station.id));
        std::fs::write(path, &csv)?;
        total += csv.len() as u64;
    }
    Ok(total)
}

/// A weather station: where it is and its climate.
struct Station {
    number: u32,
    /// 11 digits: a 6-digit USAF id and a 5-digit WBAN id (99999 for most stations, as in GSOD).
    id: String,
    name: String,
    /// Latitude and longitude in 1e-7 degrees, elevation in tenths of a metre; `None`: not known.
    location: Option<(i64, i64, i64)>,
    /// The yearly mean of TEMP and how far the seasons move it, in tenths of °F.
    mean: i64,
    swing: i64,
    /// The day of the year (from 0) with the warmest mean: late July in the north, mid January in the south.
    peak: u32,
    /// Chance of a wet day, in percent.
    wetness: u32,
}

const PLACES: [&str; 16] = [
    "PORT ALDER",
    "SAINT BRIGID",
    "LAKE MORROW",
    "MOUNT KESTREL",
    "NEW HALDEN",
    "CAPE VERITY",
    "EAST LINDON",
    "FORT ARLEN",
    "RIO CLARO",
    "SAN ESTEBAN",
    "BAY OF ISLES",
    "GREEN HOLLOW",
    "OLD MARKET",
    "NORTH QUAY",
    "DESERT WELLS",
    "SALT FLATS",
];
const KINDS: [&str; 5] = ["", " AIRPORT", " INTL", " NAVY", " AWOS"];
const COUNTRIES: [&str; 12] = [
    "US", "CA", "NO", "AU", "BR", "IN", "ZA", "JP", "FR", "MX", "AR", "KE",
];

impl Station {
    fn new(number: u32) -> Self {
        let mut rng = StdRng::seed_from_u64(u64::from(number) | 1 << 40);
        let (usaf, wban) = (10_010 + (number % 98_999) * 10, 99_999 - number / 98_999);
        let name = format!(
            "{}{}, {}",
            PLACES[rng.random_range(0..PLACES.len())],
            KINDS[rng.random_range(0..KINDS.len())],
            COUNTRIES[rng.random_range(0..COUNTRIES.len())]
        );
        let latitude: i64 = rng.random_range(-55_0000000..=72_0000000);
        let longitude: i64 = rng.random_range(-180_0000000..=180_0000000);
        let elevation: i64 = rng.random_range(-100..=30_000);
        // One station in 40 has no known location, as some of GSOD's have empty cells there.
        let location = (number % 40 != 39).then_some((latitude, longitude, elevation));
        let degrees = latitude.abs() / 10_000_000;
        // Seasons grow with the latitude, and are milder in the mostly oceanic south.
        let swing = (degrees * 6).min(300);
        Self {
            number,
            id: format!("{usaf:06}{wban:05}"),
            name,
            location,
            // About 80 °F at the tropics, 50 °F at 45°; some places (deserts, valleys) run hotter.
            mean: 800 - (degrees - 15).max(0) * 10 + rng.random_range(-40..=90),
            swing: if latitude >= 0 { swing } else { swing * 3 / 5 },
            peak: if latitude >= 0 { 200 } else { 17 },
            wetness: rng.random_range(10..=60),
        }
    }

    /// Writes the row of day `day` (from 0) of `year`.
    fn row(&self, out: &mut String, rng: &mut StdRng, year: u32, day: u32) {
        let (month, day_of_month) = month_and_day(year, day);
        let from_peak = day.abs_diff(self.peak);
        let distance = i64::from(from_peak.min(year_length(year) - from_peak));
        let season = self.swing * (183 - 2 * distance) / 183;
        let temp = self.mean + season + rng.random_range(-50..=50);
        let (wet, cold) = (rng.random_ratio(self.wetness, 100), temp < 320);
        let slp = 10_130 - season / 4 + rng.random_range(-120..=120);
        let elevation = self.location.map_or(0, |(_, _, elevation)| elevation);
        let wind = rng.random_range(0..=250);
        let observations = rng.random_range(4..=24);

        let (latitude, longitude, elevation_cell) = match self.location {
            Some((la, lo, el)) => (fixed(la, 7), fixed(lo, 7), fixed(el, 1)),
            None => Default::default(),
        };
        let date = format!("{year}-{month:02}-{day_of_month:02}");
        let mut cells = vec![
            self.id.clone(),
            date,
            latitude,
            longitude,
            elevation_cell,
            self.name.clone(),
        ];
        // TEMP, DEWP, SLP, STP, VISIB and WDSP, each with its count of observations ("0" when missing).
        let dew_point = temp - rng.random_range(20..=150);
        // GSOD writes a station pressure of 1002.2 mb as 2.2: the thousands are dropped.
        let station_pressure = (slp - elevation / 8) % 10_000;
        let visibility = rng.random_range(5..=200);
        let counted = [
            (temp, 20, MISSING_TEMPERATURE),
            (dew_point, 40, MISSING_TEMPERATURE),
            (slp, 100, MISSING_TEMPERATURE),
            (station_pressure, 100, MISSING_TEMPERATURE),
            (visibility, 50, MISSING_DISTANCE),
            (wind, 20, MISSING_DISTANCE),
        ];
        for (value, missing_per_thousand, marker) in counted {
            let cell = reading(rng, value, 1, missing_per_thousand, marker);
            let count = if cell == marker { 0 } else { observations };
            cells.extend([cell, format!("{count:>2}")]);
        }
        let max_speed = wind + rng.random_range(20..=150);
        cells.push(reading(rng, max_speed, 1, 20, MISSING_DISTANCE));
        // Gusts are missing more often than not.
        let gust = max_speed + rng.random_range(30..=200);
        cells.push(reading(rng, gust, 1, 667, MISSING_DISTANCE));
        for spread in [40, -40] {
            let extreme = temp + spread + spread.signum() * rng.random_range(0..=120);
            cells.push(reading(rng, extreme, 1, 25, MISSING_TEMPERATURE));
            // "*": derived from the hourly data.
            let derived = rng.random_ratio(1, 3);
            cells.push(if derived { "*" } else { " " }.to_owned());
        }
        let rain = if wet { rng.random_range(1..=250) } else { 0 };
        cells.push(reading(rng, rain, 2, 50, "99.99"));
        cells.push(char::from(b'A' + rng.random_range(0..9u8)).to_string());
        cells.push(match cold && wet {
            true => fixed(rng.random_range(5..=300), 1),
            false => MISSING_DISTANCE.to_owned(),
        });
        let flags = [
            rng.random_ratio(1, 10),
            wet && !cold,
            wet && cold,
            rng.random_ratio(1, 400),
            wet && temp > 700 && rng.random_ratio(1, 3),
            false,
        ];
        cells.push(flags.iter().map(|&on| if on { '1' } else { '0' }).collect());
        debug_assert_eq!(cells.len(), 28);
        let _ = writeln!(out, "\"{}\"", cells.join("\",\""));
    }
}

const MISSING_TEMPERATURE: &str = "9999.9";
const MISSING_DISTANCE: &str = "999.9";

/// A reading as GSOD writes it: the value in tenths (or hundredths), or, in `per_thousand` rows of 1,000, the
/// missing marker.
fn reading(rng: &mut StdRng, value: i64, decimals: u32, per_thousand: u32, marker: &str) -> String {
    if rng.random_ratio(per_thousand, 1000) {
        marker.to_owned()
    } else {
        fixed(value, decimals)
    }
}

/// An integer in units of `10^-decimals` as a decimal: `fixed(-5, 1)` is `-0.5`.
fn fixed(value: i64, decimals: u32) -> String {
    let scale = 10i64.pow(decimals);
    let sign = if value < 0 { "-" } else { "" };
    let (whole, fraction) = (value.abs() / scale, value.abs() % scale);
    format!(
        "{sign}{whole}.{fraction:0width$}",
        width = decimals as usize
    )
}

fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn year_length(year: u32) -> u32 {
    if is_leap(year) { 366 } else { 365 }
}

/// Day `day` (from 0) of `year` as its month and day of the month, both from 1.
fn month_and_day(year: u32, mut day: u32) -> (u32, u32) {
    let february = if is_leap(year) { 29 } else { 28 };
    let months = [31, february, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut month = 0;
    while month < 11 && day >= months[month] {
        day -= months[month];
        month += 1;
    }
    (month as u32 + 1, day + 1)
}

/// The winners of January and July of every year (the southern and the northern summer), or of the first months
/// when those are not in the result.
fn findings(result: &serde_json::Value) -> String {
    let Some(months) = result.as_object() else {
        return String::new();
    };
    let mut shown: Vec<_> = months
        .iter()
        .filter(|(month, _)| month.ends_with("-01") || month.ends_with("-07"))
        .collect();
    if shown.is_empty() {
        shown = months.iter().take(8).collect();
    }
    let mut out = format!(
        "the hottest station-day of {} months (highest TEMP, the day's mean, °F); some of them:\n",
        months.len()
    );
    for (month, row) in shown {
        let cell = |column: &str| row[column].as_str().unwrap_or("?");
        let _ = writeln!(
            out,
            "  {month}  {:>6} °F  {}  {:<28}  {}",
            cell("TEMP"),
            cell("STATION"),
            cell("NAME"),
            cell("DATE")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_follow_the_calendar() {
        assert_eq!(month_and_day(2021, 0), (1, 1));
        assert_eq!(month_and_day(2021, 31), (2, 1));
        assert_eq!(month_and_day(2021, 59), (3, 1));
        assert_eq!(month_and_day(2024, 59), (2, 29));
        assert_eq!(month_and_day(2024, 60), (3, 1));
        assert_eq!(month_and_day(2021, 364), (12, 31));
        assert_eq!(month_and_day(2024, 365), (12, 31));
    }

    #[test]
    fn the_help_tells_the_files_layout() {
        use clap::CommandFactory;
        let cli = crate::Cli::command();
        let demo = cli.find_subcommand("demo").unwrap();
        let objects = demo
            .get_arguments()
            .find(|a| a.get_id() == "objects")
            .unwrap();
        let help = objects.get_help().unwrap().to_string();
        let layout = format!("file i is station i / {YEARS}'s for year {FIRST_YEAR} + i % {YEARS}");
        assert!(help.contains(&layout), "{help}");
    }

    #[test]
    fn fixed_point_values_print_as_gsod_writes_them() {
        assert_eq!(fixed(268, 1), "26.8");
        assert_eq!(fixed(-5, 1), "-0.5");
        assert_eq!(fixed(0, 2), "0.00");
        assert_eq!(fixed(709_333_333, 7), "70.9333333");
        assert_eq!(fixed(99_999, 1), "9999.9");
    }

    #[test]
    fn a_file_has_the_gsod_schema_and_one_row_a_day() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), 1, 366).unwrap();
        let body = std::fs::read_to_string(dir.path().join("2021/01001099999.csv")).unwrap();
        let mut lines = body.lines();
        assert_eq!(format!("{}\n", lines.next().unwrap()), HEADER);
        let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(body.as_bytes())
            .records()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 365, "a row for each day of 2021");
        assert_eq!(&rows[0][1], "2021-01-01");
        assert_eq!(&rows[364][1], "2021-12-31");
        for row in &rows {
            assert_eq!(row.len(), 28);
            assert!(row[5].contains(", "), "a name with a comma: {:?}", &row[5]);
            assert_eq!(
                row[7].len(),
                2,
                "observations in two characters: {:?}",
                &row[7]
            );
            assert_eq!(row[27].len(), 6, "six flags: {:?}", &row[27]);
        }
        assert!(body.lines().all(|l| l.starts_with('"') && l.ends_with('"')));
    }
}
