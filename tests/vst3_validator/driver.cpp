// A small driver for Steinberg's VST3 SDK test suite (the tests behind the SDK's `validator`),
// compiled from the SDK sources that the clap-wrapper crate vendors. It loads a .vst3 bundle,
// runs every applicable test in 32- and 64-bit processing, prints one line per test and exits
// non-zero if a test fails that is not listed in the allow-list given as extra arguments.
//
// Usage: vst3-validator PATH.vst3 [ALLOWED_FAILURE ...]

#include "public.sdk/source/vst/hosting/hostclasses.h"
#include "public.sdk/source/vst/hosting/module.h"
#include "public.sdk/source/vst/hosting/plugprovider.h"
#include "public.sdk/source/vst/testsuite/vsttestsuite.h"
#include "public.sdk/source/vst/utility/stringconvert.h"
#include "pluginterfaces/vst/vstspeaker.h"

#include "pluginterfaces/test/itest.h"

#include <cstdio>
#include <set>
#include <string>
#include <vector>

using namespace Steinberg;
using namespace Steinberg::Vst;

namespace Steinberg {
DEF_CLASS_IID (ITestResult)
}

// Collects a test's messages; counts errors.
class Result : public ITestResult
{
public:
	int errors = 0;
	std::vector<std::string> messages;

	tresult PLUGIN_API queryInterface (const TUID iid, void** obj) override
	{
		if (FUnknownPrivate::iidEqual (iid, ITestResult::iid) || FUnknownPrivate::iidEqual (iid, FUnknown::iid))
		{
			*obj = this;
			return kResultOk;
		}
		*obj = nullptr;
		return kNoInterface;
	}
	uint32 PLUGIN_API addRef () override { return 1; }
	uint32 PLUGIN_API release () override { return 1; }
	void PLUGIN_API addErrorMessage (const tchar* msg) override
	{
		errors++;
		messages.push_back ("ERROR: " + VST3::StringConvert::convert (msg));
	}
	void PLUGIN_API addMessage (const tchar* msg) override
	{
		messages.push_back (VST3::StringConvert::convert (msg));
	}
};

int main (int argc, char** argv)
{
	if (argc < 2)
	{
		std::fprintf (stderr, "usage: %s PATH.vst3 [ALLOWED_FAILURE ...]\n", argv[0]);
		return 2;
	}
	std::set<std::string> allowed (argv + 2, argv + argc);
	std::string error;
	auto module = VST3::Hosting::Module::create (argv[1], error);
	if (!module)
	{
		std::fprintf (stderr, "cannot load %s: %s\n", argv[1], error.c_str ());
		return 2;
	}
	auto host = owned (new HostApplication ());
	PluginContextFactory::instance ().setPluginContext (host);
	auto factory = module->getFactory ();
	int passed = 0, failed = 0, unexpected = 0;
	for (auto& info : factory.classInfos ())
	{
		if (info.category () != kVstAudioEffectClass)
			continue;
		std::printf ("plugin: %s\n", info.name ().c_str ());
		auto provider = owned (new PlugProvider (factory, info, true));
		if (!provider->initialize ())
		{
			std::fprintf (stderr, "the plug-in does not initialise\n");
			return 2;
		}
		std::vector<IPtr<ITest>> tests;
		auto add = [&] (ITest* t) { tests.push_back (owned (t)); };
		add (new ScanBussesTest (provider));
		add (new ScanParametersTest (provider));
		add (new MidiMappingTest (provider));
		add (new EditorClassesTest (provider));
		add (new UnitInfoTest (provider));
		add (new ProgramInfoTest (provider));
		add (new TerminateInitializeTest (provider));
		add (new UnitStructureTest (provider));
		add (new MidiLearnTest (provider));
		add (new ParameterFunctionNameTest (provider));
		add (new BusConsistencyTest (provider));
		add (new BusActivationTest (provider));
		add (new CheckAudioBusArrangementTest (provider));
		add (new BusInvalidIndexTest (provider));
		add (new SideChainArrangementTest (provider));
		add (new ProcessContextRequirementsTest (provider));
		add (new NoteExpressionTest (provider));
		add (new KeyswitchTest (provider));
		add (new InvalidStateTransitionTest (provider));
		add (new RepeatIdenticalStateTransitionTest (provider));
		for (ProcessSampleSize size : {kSample32, kSample64})
		{
			add (new ValidStateTransitionTest (provider, size));
			add (new SuspendResumeTest (provider, size));
			add (new ProcessTest (provider, size));
			add (new ProcessFormatTest (provider, size));
			add (new ProcessThreadTest (provider, size));
			add (new ProcessTailTest (provider, size));
			add (new VariableBlockSizeTest (provider, size));
			add (new SilenceFlagsTest (provider, size));
			add (new SilenceProcessingTest (provider, size));
			add (new ProcessInputOverwritingTest (provider, size));
			add (new BypassPersistenceTest (provider, size));
			add (new FlushParamTest (provider, size));
			add (new FlushParamTest2 (provider, size));
			add (new FlushParamTest3 (provider, size));
			add (new SpeakerArrangementTest (provider, size, SpeakerArr::kMono, SpeakerArr::kMono));
			add (new SpeakerArrangementTest (provider, size, SpeakerArr::kStereo, SpeakerArr::kStereo));
			add (new AutomationTest (provider, size, 100, 1, false));
			add (new AutomationTest (provider, size, 100, 1, true));
		}
		for (auto& test : tests)
		{
			auto* base = dynamic_cast<TestBase*> (test.get ());
			std::string name = base ? base->getName () : "test";
			Result result;
			bool ok = test->setup ();
			ok = test->run (&result) && ok;
			ok = test->teardown () && ok;
			ok = ok && result.errors == 0;
			bool expected = allowed.count (name) > 0;
			std::printf ("[%s] %s%s\n", ok ? "PASS" : "FAIL", name.c_str (), !ok && expected ? " (known, see README)" : "");
			if (!ok)
				for (auto& m : result.messages)
					std::printf ("    %s\n", m.c_str ());
			ok ? passed++ : failed++;
			if (!ok && !expected)
				unexpected++;
		}
	}
	std::printf ("%d passed, %d failed (%d not in the allow-list)\n", passed, failed, unexpected);
	PluginContextFactory::instance ().setPluginContext (nullptr);
	return unexpected == 0 ? 0 : 1;
}
