//! The project's one plotters set-up, for its SVG charts: the comparison suite's
//! (`runner::svg`: ratios to the reference) and `domalloc report --svg`'s (the tools crate's
//! `report::chart`: memory and frees per rank), which reaches plotters through [`plotters`]
//! here rather than depending on it itself.
//!
//! plotters is built with only its SVG backend: text is measured with plotters' built-in
//! estimate (no font-kit, fontconfig or freetype, which a fresh Debian does not have) and
//! written as SVG `<text>`, so the viewer's sans-serif font draws it.

pub use plotters;

use plotters::coord::Shift;
use plotters::prelude::*;

/// A drawing area of an SVG document.
pub type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Whatever went wrong drawing.
pub type Error = Box<dyn std::error::Error>;

/// An SVG document `size` pixels large: a white page on which `draw` draws.
pub fn svg(size: (u32, u32), draw: impl FnOnce(&Area<'_>) -> Result<(), Error>) -> Result<String, Error> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(out)
}

/// The sans-serif font at `size` points.
pub fn font(size: u32) -> FontDesc<'static> {
    ("sans-serif", size).into_font()
}

/// The legend entry of a series of bars: a square of its colour.
pub fn swatch(colour: RGBColor) -> impl Fn((i32, i32)) -> Rectangle<(i32, i32)> {
    move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
}

/// Draws the legend of `chart`'s labelled series: top right, on a white box with a black frame.
pub fn legend<'a, CT: CoordTranslate>(chart: &mut ChartContext<'a, SVGBackend<'a>, CT>) -> Result<(), Error> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
