//! A VST3 host (the `vst3` crate over libloading) that loads the bundled `CP Piano.vst3`,
//! initialises it with a host-application object, activates its event output bus, plays a
//! transport and checks the notes: on the song's 16th grid at exact samples, paired note-offs,
//! all notes off on stop. Needs the bundle (`cargo xtask test` builds it first).

mod common;

use std::cell::RefCell;
use std::ffi::{c_void, CStr};
use std::path::PathBuf;

use vst3::Steinberg::Vst::{
    AudioBusBuffers, AudioBusBuffers__type0, BusDirections_, Event, Event_, IAudioProcessor, IAudioProcessorTrait, IComponent, IComponentTrait, IEventList, IEventListTrait,
    IHostApplication, IHostApplicationTrait, MediaTypes_, ProcessContext, ProcessContext_, ProcessData, ProcessModes_, ProcessSetup,
    String128, SymbolicSampleSizes_,
};
use vst3::Steinberg::{kNotImplemented, kResultFalse, kResultOk, tresult, FUnknown, IPluginBaseTrait, IPluginFactory, IPluginFactoryTrait, PClassInfo, TUID};
use vst3::{Class, ComPtr, ComWrapper, Interface};

struct HostApplication;

impl Class for HostApplication {
    type Interfaces = (IHostApplication,);
}

impl IHostApplicationTrait for HostApplication {
    unsafe fn getName(&self, name: *mut String128) -> tresult {
        for (i, c) in "cp-piano test host".encode_utf16().chain([0]).enumerate() {
            (*name)[i] = c;
        }
        kResultOk
    }
    unsafe fn createInstance(&self, _cid: *mut TUID, _iid: *mut TUID, obj: *mut *mut c_void) -> tresult {
        *obj = std::ptr::null_mut();
        kNotImplemented
    }
}

/// The output event list the plugin writes into.
struct Events(RefCell<Vec<Event>>);

impl Class for Events {
    type Interfaces = (IEventList,);
}

impl IEventListTrait for Events {
    unsafe fn getEventCount(&self) -> i32 {
        self.0.borrow().len() as i32
    }
    unsafe fn getEvent(&self, index: i32, e: *mut Event) -> tresult {
        match self.0.borrow().get(index as usize) {
            Some(ev) => {
                *e = *ev;
                kResultOk
            }
            None => kResultFalse,
        }
    }
    unsafe fn addEvent(&self, e: *mut Event) -> tresult {
        self.0.borrow_mut().push(*e);
        kResultOk
    }
}

/// The library inside the bundled `CP Piano.vst3`, or None (skip) outside `cargo xtask test`.
fn bundle_library(test: &str) -> Option<PathBuf> {
    common::bundles(test).map(|dir| dir.join("CP Piano.vst3/Contents/x86_64-linux/CP Piano.so"))
}

#[test]
fn the_vst3_plugin_plays_the_song_on_exact_samples() {
    let Some(path) = bundle_library("the_vst3_plugin_plays_the_song_on_exact_samples") else { return };
    // SAFETY: loading our own plugin and calling its exported VST3 entry points.
    unsafe {
        let library = libloading::Library::new(path).expect("the .vst3 loads");
        let module_entry: libloading::Symbol<unsafe extern "C" fn(*mut c_void) -> bool> = library.get(b"ModuleEntry").expect("ModuleEntry");
        assert!(module_entry(std::ptr::null_mut()));
        let get_factory: libloading::Symbol<unsafe extern "system" fn() -> *mut IPluginFactory> = library.get(b"GetPluginFactory").expect("GetPluginFactory");
        let factory = ComPtr::<IPluginFactory>::from_raw(get_factory()).expect("a factory");
        let mut found = None;
        for i in 0..factory.countClasses() {
            let mut info: PClassInfo = std::mem::zeroed();
            assert_eq!(factory.getClassInfo(i, &mut info), kResultOk);
            let category = CStr::from_ptr(info.category.as_ptr()).to_string_lossy().to_string();
            let name = CStr::from_ptr(info.name.as_ptr()).to_string_lossy().to_string();
            if category == "Audio Module Class" {
                assert_eq!(name, "CP Piano");
                found = Some(info.cid);
            }
        }
        let cid = found.expect("an audio module class");
        let mut object: *mut c_void = std::ptr::null_mut();
        let result = factory.createInstance(cid.as_ptr(), IComponent::IID.as_ptr() as *const i8, &mut object);
        assert_eq!(result, kResultOk);
        let component = ComPtr::<IComponent>::from_raw(object as *mut IComponent).expect("a component");
        let host = ComWrapper::new(HostApplication);
        let host_ptr = host.to_com_ptr::<FUnknown>().expect("host as FUnknown");
        assert_eq!(component.initialize(host_ptr.as_ptr()), kResultOk);
        let processor: ComPtr<IAudioProcessor> = component.cast().expect("an audio processor");
        // One stereo audio output (hosts such as Ableton Live need an audio bus), and the notes.
        assert_eq!(component.getBusCount(MediaTypes_::kAudio as i32, BusDirections_::kOutput as i32), 1, "one audio output bus");
        assert_eq!(component.getBusCount(MediaTypes_::kAudio as i32, BusDirections_::kInput as i32), 0, "no audio input");
        assert_eq!(component.activateBus(MediaTypes_::kAudio as i32, BusDirections_::kOutput as i32, 0, 1), kResultOk);
        assert_eq!(component.activateBus(MediaTypes_::kEvent as i32, BusDirections_::kOutput as i32, 0, 1), kResultOk);
        let (rate, block) = (48_000.0, 256);
        let mut setup = ProcessSetup {
            processMode: ProcessModes_::kRealtime as i32,
            symbolicSampleSize: SymbolicSampleSizes_::kSample32 as i32,
            maxSamplesPerBlock: block,
            sampleRate: rate,
        };
        assert_eq!(processor.setupProcessing(&mut setup), kResultOk);
        assert_eq!(component.setActive(1), kResultOk);
        processor.setProcessing(1);
        let events = ComWrapper::new(Events(RefCell::new(Vec::with_capacity(1024))));
        let event_list = events.to_com_ptr::<IEventList>().expect("event list");
        let tempo = 120.0;
        let bps = tempo / 60.0 / rate;
        let mut out: Vec<(bool, u64, i16)> = Vec::new();
        let run = |playing: bool, sample: u64, out: &mut Vec<(bool, u64, i16)>| {
            let mut context: ProcessContext = std::mem::zeroed();
            context.state = (ProcessContext_::StatesAndFlags_::kTempoValid | ProcessContext_::StatesAndFlags_::kProjectTimeMusicValid)
                | if playing { ProcessContext_::StatesAndFlags_::kPlaying } else { 0 };
            context.sampleRate = rate;
            context.tempo = tempo;
            context.projectTimeSamples = sample as i64;
            context.projectTimeMusic = sample as f64 * bps;
            context.timeSigNumerator = 4;
            context.timeSigDenominator = 4;
            // Garbage in the stereo output: the plugin must write silence over it.
            let (mut left, mut right) = (vec![0.5f32; block as usize], vec![-0.5f32; block as usize]);
            let mut channels = [left.as_mut_ptr(), right.as_mut_ptr()];
            let mut bus = AudioBusBuffers { numChannels: 2, silenceFlags: 0, __field0: AudioBusBuffers__type0 { channelBuffers32: channels.as_mut_ptr() } };
            let mut data = ProcessData {
                processMode: ProcessModes_::kRealtime as i32,
                symbolicSampleSize: SymbolicSampleSizes_::kSample32 as i32,
                numSamples: block,
                numInputs: 0,
                numOutputs: 1,
                inputs: std::ptr::null_mut(),
                outputs: &mut bus,
                inputParameterChanges: std::ptr::null_mut(),
                outputParameterChanges: std::ptr::null_mut(),
                inputEvents: std::ptr::null_mut(),
                outputEvents: event_list.as_ptr(),
                processContext: &mut context,
            };
            events.0.borrow_mut().clear();
            assert_eq!(processor.process(&mut data), kResultOk);
            assert!(left.iter().chain(&right).all(|&x| x == 0.0), "the audio output is silent");
            for e in events.0.borrow().iter() {
                let at = sample + e.sampleOffset as u64;
                if e.r#type == Event_::EventTypes_::kNoteOnEvent as u16 {
                    out.push((true, at, e.__field0.noteOn.pitch));
                } else if e.r#type == Event_::EventTypes_::kNoteOffEvent as u16 {
                    out.push((false, at, e.__field0.noteOff.pitch));
                }
            }
        };
        for _ in 0..100 {
            run(false, 0, &mut out);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Playback runs faster than real time, so the worker may still be writing (the plugin
        // then waits and skips, by design): repeat the pass from beat 0 until two passes agree.
        let mut previous: Option<Vec<(bool, u64, i16)>> = None;
        for _ in 0..60 {
            let start = out.len();
            let mut sample = 0u64;
            while (sample as f64) * bps < 32.0 {
                run(true, sample, &mut out);
                sample += block as u64;
            }
            run(false, sample, &mut out);
            let pass: Vec<(bool, u64, i16)> = out.drain(start..).collect();
            let done = pass.iter().any(|e| e.0) && previous.as_ref() == Some(&pass);
            previous = Some(pass);
            if done {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        let out = previous.unwrap_or_default();
        let ons: Vec<u64> = out.iter().filter(|e| e.0).map(|e| e.1).collect();
        println!("{} note-ons in 8 bars", ons.len());
        assert!(ons.len() >= 16, "the song plays ({} note-ons)", ons.len());
        for at in &ons {
            assert_eq!(at % 6000, 0, "note-on at sample {at} is off the 16th grid");
        }
        let mut sounding: Vec<i16> = Vec::new();
        for &(on, _, p) in &out {
            if on {
                sounding.push(p);
            } else {
                let k = sounding.iter().position(|&s| s == p).expect("an off follows its on");
                sounding.remove(k);
            }
        }
        assert!(sounding.is_empty(), "stop ends every note: {sounding:?}");
        processor.setProcessing(0);
        assert_eq!(component.setActive(0), kResultOk);
        assert_eq!(component.terminate(), kResultOk);
        drop(processor);
        drop(component);
        drop(factory);
        let module_exit: libloading::Symbol<unsafe extern "C" fn() -> bool> = library.get(b"ModuleExit").expect("ModuleExit");
        module_exit();
    }
}
