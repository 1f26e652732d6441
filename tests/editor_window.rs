//! The editor opens in a real X11 window: a CLAP host embeds the plugin's GUI in a window of
//! its own, lets it draw, and grabs the pixels (saved as target/editor-screenshot.png). Needs an
//! X display: CI runs the tests under `xvfb-run`; without a display this test says so and skips.

mod common;

use std::ffi::CStr;
use std::path::PathBuf;

use clack_extensions::gui::{GuiApiType, GuiConfiguration, GuiSize, HostGui, HostGuiImpl, PluginGui, Window};
use clack_host::prelude::*;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt, CreateWindowAux, ImageFormat, WindowClass};

struct Shared;
impl SharedHandler<'_> for Shared {
    fn request_restart(&self) {}
    fn request_process(&self) {}
    fn request_callback(&self) {}
}

impl HostGuiImpl for Shared {
    fn resize_hints_changed(&self) {}
    fn request_resize(&self, _size: GuiSize) -> Result<(), HostError> {
        Ok(())
    }
    fn request_show(&self) -> Result<(), HostError> {
        Ok(())
    }
    fn request_hide(&self) -> Result<(), HostError> {
        Ok(())
    }
    fn closed(&self, _was_destroyed: bool) {}
}

struct TestHost;
impl HostHandlers for TestHost {
    type Shared<'a> = Shared;
    type MainThread<'a> = ();
    type AudioProcessor<'a> = ();

    fn declare_extensions(builder: &mut HostExtensions<Self>, _shared: &Self::Shared<'_>) {
        builder.register::<HostGui>();
    }
}

#[test]
fn the_editor_opens_and_draws_in_an_x11_window() {
    if std::env::var_os("DISPLAY").is_none() {
        eprintln!("skipped: no X display (CI runs the tests under xvfb-run)");
        return;
    }
    let Some(bundles) = common::bundles("the_editor_opens_and_draws_in_an_x11_window") else { return };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = bundles.join("CP Piano.clap");
    // SAFETY: loading our own plugin bundle.
    let entry = unsafe { PluginEntry::load(&path) }.expect("the .clap loads");
    let factory = entry.get_plugin_factory().expect("a plugin factory");
    let descriptor = factory.plugin_descriptors().next().expect("one plugin");
    let id: &CStr = descriptor.id().unwrap();
    let info = HostInfo::new("cp-piano editor test", "cp-piano", "https://example.invalid", "1.0").unwrap();
    let mut plugin = PluginInstance::<TestHost>::new(|_| Shared, |_| (), &entry, id, &info).expect("instantiates");
    // Activation starts the worker: the window then shows a song being written.
    let config = PluginAudioConfiguration { sample_rate: 48_000.0, min_frames_count: 1, max_frames_count: 256 };
    let processor = plugin.activate(|_, _| (), config).expect("activates");
    let handle = plugin.plugin_handle();
    let gui = handle.get_extension::<PluginGui>().expect("the plugin has a GUI");
    let config = GuiConfiguration { api_type: GuiApiType::X11, is_floating: false };
    assert!(gui.is_api_supported(&handle, config), "embedded X11 GUIs are supported");
    gui.create(&handle, config).expect("the GUI is created");
    let size = gui.get_size(&handle).expect("the GUI has a size");
    assert!(size.width >= 400 && size.height >= 300, "{}x{}", size.width, size.height);

    let (conn, screen) = x11rb::connect(None).expect("the X display answers");
    let screen = &conn.setup().roots[screen];
    let window = conn.generate_id().unwrap();
    conn.create_window(0, window, screen.root, 0, 0, size.width as u16, size.height as u16, 0, WindowClass::INPUT_OUTPUT, 0, &CreateWindowAux::new().background_pixel(screen.white_pixel))
        .unwrap();
    conn.map_window(window).unwrap();
    // A round trip: the server has made the window before the plugin's own connection reparents.
    conn.get_input_focus().unwrap().reply().expect("the X display answers");
    // SAFETY: the window lives until after the GUI is destroyed below.
    unsafe { gui.set_parent(&handle, Window::from_x11_handle(window as _)) }.expect("the GUI embeds");
    gui.show(&handle).expect("the GUI shows");
    std::thread::sleep(std::time::Duration::from_secs(6));

    let image = conn.get_image(ImageFormat::Z_PIXMAP, window, 0, 0, size.width as u16, size.height as u16, !0).unwrap().reply().expect("the window's pixels");
    let (w, h) = (size.width as usize, size.height as usize);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for px in image.data.chunks(4).take(w * h) {
        rgb.extend([px[2], px[1], px[0]]);
    }
    let mut colours: Vec<[u8; 3]> = rgb.chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
    colours.sort();
    colours.dedup();
    let out = root.join("target/editor-screenshot.png");
    let file = std::fs::File::create(&out).unwrap();
    let mut encoder = png::Encoder::new(file, w as u32, h as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header().unwrap().write_image_data(&rgb).unwrap();
    println!("editor {}x{}: {} colours, saved to {}", w, h, colours.len(), out.display());
    assert!(colours.len() > 10, "the editor drew something ({} colours)", colours.len());

    gui.hide(&handle).ok();
    gui.destroy(&handle);
    conn.destroy_window(window).unwrap();
    conn.flush().unwrap();
    plugin.deactivate(processor);
}
