#include "PluginProcessor.h"
#include "PluginEditor.h"
#include "EngineWorker.h"

#include <cmath>

namespace
{
const juce::StringArray statusChoices { "idle", "working", "ready", "engine not running", "error", "cancelled" };
const juce::StringArray instrumentChoices { "bass", "drums" };
}

const juce::StringArray BacklineProcessor::actionChoices { "New take", "Variation", "Redo bars" };

BacklineProcessor::BacklineProcessor()
    : AudioProcessor (BusesProperties()
                          .withInput ("Input", juce::AudioChannelSet::stereo(), true)
                          .withOutput ("Output", juce::AudioChannelSet::stereo(), true))
{
    using namespace juce;
    addParameter (generate = new AudioParameterBool ({ "generate", 1 }, "Generate", false));
    addParameter (record = new AudioParameterBool ({ "record", 1 }, "Record", true));
    addParameter (passInput = new AudioParameterBool ({ "pass_input", 1 }, "Pass Input", true));
    addParameter (cancel = new AudioParameterBool ({ "cancel", 1 }, "Cancel", false));
    addParameter (instrument = new AudioParameterChoice ({ "instrument", 1 }, "Instrument", instrumentChoices, 0));
    addParameter (seed = new AudioParameterInt ({ "seed", 1 }, "Seed", 0, 99999, 0));
    addParameter (steps = new AudioParameterInt ({ "steps", 1 }, "Steps", 0, 200, 0));   // 0: the model's own
    // A bass's takes, the most in key kept (the others listed to audition); 0: the model's own default.
    addParameter (bassTakes = new AudioParameterInt ({ "bass_takes", 1 }, "Bass Takes", 0, 8, 0));
    // Guidance scales; 0 (the default) leaves them to the model, whose file records its measured best.
    addParameter (cfgContext = new AudioParameterFloat ({ "cfg_context", 1 }, "CFG Context",
                                                        NormalisableRange<float> (0.0f, 10.0f, 0.01f), 0.0f));
    addParameter (cfgStyle = new AudioParameterFloat ({ "cfg_style", 1 }, "CFG Style",
                                                      NormalisableRange<float> (0.0f, 10.0f, 0.01f), 0.0f));
    // How firmly the stem keeps to the beat and follows the chords (a denoiser told them); 0: the model's own.
    addParameter (cfgTempo = new AudioParameterFloat ({ "cfg_tempo", 1 }, "Beat Lock",
                                                      NormalisableRange<float> (0.0f, 10.0f, 0.01f), 0.0f));
    addParameter (cfgChords = new AudioParameterFloat ({ "cfg_chords", 1 }, "Chord Lock",
                                                       NormalisableRange<float> (0.0f, 10.0f, 0.01f), 0.0f));
    addParameter (status = new AudioParameterChoice ({ "status", 1 }, "Status", statusChoices, 0,
                                                     AudioParameterChoiceAttributes().withAutomatable (false)));
    addParameter (progress = new AudioParameterFloat ({ "progress", 1 }, "Progress", NormalisableRange<float> (0.0f, 1.0f), 0.0f,
                                                      AudioParameterFloatAttributes().withAutomatable (false)));
    // For hosts without a transport (pedalboard, offline tools): positions count from the last reset().
    addParameter (freeRun = new AudioParameterBool ({ "free_run", 1 }, "Free Run", false));
    addParameter (take = new AudioParameterInt ({ "take", 1 }, "Take", 1, maxTakes, 1));
    addParameter (action = new AudioParameterChoice ({ "action", 1 }, "Action", actionChoices, 0));
    addParameter (variation = new AudioParameterFloat ({ "variation", 1 }, "Variation",
                                                       NormalisableRange<float> (0.05f, 1.0f, 0.01f), 0.5f));
    addParameter (redoFromBar = new AudioParameterInt ({ "redo_from_bar", 1 }, "Redo From Bar", 1, 999, 1));
    addParameter (redoToBar = new AudioParameterInt ({ "redo_to_bar", 1 }, "Redo To Bar", 2, 1000, 2));
    addParameter (loopBars = new AudioParameterInt ({ "loop_bars", 1 }, "Loop Bars", 0, 16, 0));
    addParameter (stereoWidth = new AudioParameterFloat ({ "stereo_width", 1 }, "Stereo Width",
                                                         NormalisableRange<float> (0.0f, 1.0f, 0.01f), 0.0f));
    // The engine's default blend (engine/params.py style_ratio; a test keeps the two equal).
    addParameter (styleBlend = new AudioParameterFloat ({ "style_blend", 1 }, "Style Blend",
                                                        NormalisableRange<float> (0.0f, 1.0f, 0.01f), 0.5f));
    addParameter (midi = new AudioParameterBool ({ "midi", 1 }, "MIDI", false));
    addParameter (padOn = new AudioParameterBool ({ "style_pad_on", 1 }, "Style Pad On", false));
    addParameter (padX = new AudioParameterFloat ({ "style_pad_x", 1 }, "Style Pad X", NormalisableRange<float> (-1.0f, 1.0f), 0.0f));
    addParameter (padY = new AudioParameterFloat ({ "style_pad_y", 1 }, "Style Pad Y", NormalisableRange<float> (-1.0f, 1.0f), 0.0f));
    // A fast draft: the engine's few-step sampler (a model distilled for speed, its guidance built in), when it has one.
    addParameter (fastDraft = new AudioParameterBool ({ "fast_draft", 1 }, "Fast Draft", false));
    worker = std::make_unique<EngineWorker> (*this);
    worker->startThread();
}

BacklineProcessor::~BacklineProcessor()
{
    worker->signalThreadShouldExit();
    worker->stopThread (10000);   // the worker closes its socket and context itself (LINGER 0)
    worker.reset();
    delete stem.exchange (nullptr);
}

bool BacklineProcessor::isBusesLayoutSupported (const BusesLayout& layouts) const
{
    const auto out = layouts.getMainOutputChannelSet();
    if (out != juce::AudioChannelSet::mono() && out != juce::AudioChannelSet::stereo())
        return false;
    return layouts.getMainInputChannelSet() == out;
}

void BacklineProcessor::allocateCapture (double sampleRate)
{
    const juce::ScopedLock sl (captureAllocLock);
    const auto frames = (int) std::ceil (maxRegionSeconds * sampleRate);
    if (captureBuffer.getNumSamples() != frames || currentSampleRate != sampleRate)
    {
        captureBuffer.setSize (2, frames, false, true, false);
        capturedFrames.store (0);
        restartCapture.store (true);
    }
}

void BacklineProcessor::prepareToPlay (double sampleRate, int)
{
    // Never reallocate under a region the worker is copying (it holds captureAllocLock while it does).
    allocateCapture (sampleRate);
    currentSampleRate = sampleRate;
    captureChannels = juce::jmin (2, getTotalNumInputChannels());
    freeRunPosition.store (0);   // a new sample rate restarts the recording (allocateCapture)
    // No lookahead and no delay: latency is 0, so setLatencySamples is not needed.
}

void BacklineProcessor::reset()
{
    freeRunPosition.store (0);   // the recorded pass stays: a host that resets between passes loops back into it
}

bool BacklineProcessor::pollGenerateTrigger()
{
    const bool now = generate->get();
    const bool before = lastGenerateValue.exchange (now);   // only one thread sees each rising edge
    if (now && ! before)
    {
        jobsRequested.fetch_add (1);
        return true;
    }
    return false;
}

void BacklineProcessor::requestGenerate()
{
    jobsRequested.fetch_add (1);
    worker->notify();
}

void BacklineProcessor::processBlock (juce::AudioBuffer<float>& buffer, juce::MidiBuffer&)
{
    juce::ScopedNoDenormals noDenormals;
    const int numSamples = buffer.getNumSamples();
    const int numIn = getTotalNumInputChannels(), numOut = getTotalNumOutputChannels();
    for (int ch = numIn; ch < numOut; ++ch)
        buffer.clear (ch, 0, numSamples);

    // Host position. With Free Run on, or without a playhead, a counter from reset() stands in for it.
    juce::int64 position = freeRunPosition.fetch_add (numSamples);
    bool playing = true;
    double ppq = 0.0, bpm = 0.0;
    int beatsPerBar = 0;
    auto* hostPlayHead = freeRun->get() ? nullptr : getPlayHead();
    if (hostPlayHead != nullptr)
    {
        if (auto info = hostPlayHead->getPosition())
        {
            if (auto t = info->getTimeInSamples())
            {
                position = *t;
                playing = info->getIsPlaying();
            }
            if (auto p = info->getPpqPosition()) ppq = *p;
            if (auto b = info->getBpm()) bpm = *b;
            if (auto signature = info->getTimeSignature())
                if (signature->denominator > 0)   // bars in the host's beats (quarter notes): 6/8 is 3 beats
                    beatsPerBar = juce::roundToInt (signature->numerator * 4.0 / signature->denominator);
        }
    }

    pollGenerateTrigger();   // lock free; the worker also polls, whoever sees the edge first counts it
    if (isNonRealtime() && jobsFinished.load() < jobsRequested.load())
    {
        // Offline rendering only (STYLE.md): wait, bounded, for the worker's exchange to finish.
        worker->notify();
        const auto deadline = juce::Time::getMillisecondCounterHiRes() + offlineWaitSeconds * 1000.0;
        while (jobsFinished.load() < jobsRequested.load() && juce::Time::getMillisecondCounterHiRes() < deadline)
            juce::Thread::sleep (2);
    }

    audioBusy.store (true);

    // ---- capture ----
    // Record keeps one contiguous pass. A jump back into the pass (a loop, or play again from its start)
    // closes it; it is then kept until Record is switched off and on or a Generate has used it.
    // Any other jump before the pass is closed starts a new one at the new position.
    const bool recordOn = record->get();
    if (recordOn && ! lastRecordOn)
        restartCapture.store (true);
    lastRecordOn = recordOn;
    if (recordOn && playing && ! captureFrozen.load() && captureChannels > 0 && captureBuffer.getNumSamples() > 0)
    {
        auto captured = capturedFrames.load();
        bool restart = restartCapture.exchange (false) || captured == 0;
        if (! restart && ! captureClosed && position != captureNextPosition)
        {
            if (position >= regionStartSample.load() && position < captureNextPosition)
                captureClosed = true;
            else
                restart = true;
        }
        if (restart)
        {
            captured = 0;
            captureClosed = false;
            capturePasses.fetch_add (1);
            capturedFrames.store (0);
            regionStartSample.store (position);
            regionStartPpq.store (ppq);
            regionBpm.store (bpm);
            regionBeatsPerBar.store (beatsPerBar);
        }
        if (! captureClosed)
        {
            const auto room = (juce::int64) captureBuffer.getNumSamples() - captured;
            const int toCopy = (int) juce::jmin ((juce::int64) numSamples, room);
            for (int ch = 0; ch < 2 && toCopy > 0; ++ch)
                captureBuffer.copyFrom (ch, (int) captured, buffer, juce::jmin (ch, captureChannels - 1), 0, toCopy);
            capturedFrames.store (captured + juce::jmax (0, toCopy));
            captureNextPosition = position + numSamples;
        }
    }

    // ---- playback: the stem sample k sounds at host sample stem->startSample + k ----
    const bool keepInput = passInput->get();
    Stem* current = stem.load();
    if (! keepInput)
        buffer.clear();
    if (current != nullptr && playing && current->audio.getNumChannels() > 0)
    {
        const auto stemFrames = (juce::int64) current->audio.getNumSamples();
        const auto first = juce::jmax ((juce::int64) 0, current->startSample - position);
        const auto last = juce::jmin ((juce::int64) numSamples, current->startSample + stemFrames - position);
        if (first < last)
        {
            const auto offset = position + first - current->startSample;
            for (int ch = 0; ch < numOut; ++ch)
                buffer.addFrom (ch, (int) first, current->audio, juce::jmin (ch, current->audio.getNumChannels() - 1),
                                (int) offset, (int) (last - first));
        }
    }

    audioBusy.store (false);
}

bool BacklineProcessor::waitUntilAudioIdle (int timeoutMs) const
{
    const auto deadline = juce::Time::getMillisecondCounter() + (juce::uint32) timeoutMs;
    while (audioBusy.load())
    {
        if (juce::Time::getMillisecondCounter() > deadline)
            return false;
        juce::Thread::yield();
    }
    return true;
}

bool BacklineProcessor::takeRegion (Region& out)
{
    {
        const juce::ScopedLock sl (infoLock);
        if (droppedRegion != nullptr && droppedAtPass == capturePasses.load())
        {
            out.audio.makeCopyOf (droppedRegion->audio);
            out.startSample = 0;
            out.startPpq = 0.0;
            out.bpm = 0.0;
            out.sampleRate = droppedRegion->sampleRate;
            captureFrozen.store (true);   // released after the job, as for a recorded region
            return true;
        }
    }
    captureFrozen.store (true);
    waitUntilAudioIdle (2000);   // a block that started before the freeze finishes its copy first
    const juce::ScopedLock sl (captureAllocLock);
    const auto frames = capturedFrames.load();
    if (frames <= 0)
        return false;
    out.audio.setSize (juce::jmax (1, captureChannels), (int) frames);
    for (int ch = 0; ch < out.audio.getNumChannels(); ++ch)
        out.audio.copyFrom (ch, 0, captureBuffer, ch, 0, (int) frames);
    out.startSample = regionStartSample.load();
    out.startPpq = regionStartPpq.load();
    out.bpm = regionBpm.load();
    out.beatsPerBar = regionBeatsPerBar.load();
    out.sampleRate = currentSampleRate;
    return true;
}

void BacklineProcessor::releaseCapture()
{
    restartCapture.store (true);
    captureFrozen.store (false);
}

void BacklineProcessor::retire (Stem* old)
{
    if (old == nullptr)
        return;
    if (waitUntilAudioIdle (500))
        delete old;
    else
        graveyard.emplace_back (old);   // freed with the plugin
}

void BacklineProcessor::publishStem (std::unique_ptr<Stem> newStem, const juce::String& path, const juce::String& newJobId)
{
    std::vector<float> peaks (512, 0.0f);
    if (newStem != nullptr && newStem->audio.getNumSamples() > 0)
    {
        const int frames = newStem->audio.getNumSamples();
        for (size_t i = 0; i < peaks.size(); ++i)
        {
            const int a = (int) ((juce::int64) frames * (juce::int64) i / (juce::int64) peaks.size());
            const int b = juce::jmax (a + 1, (int) ((juce::int64) frames * (juce::int64) (i + 1) / (juce::int64) peaks.size()));
            peaks[i] = newStem->audio.getMagnitude (0, a, juce::jmin (b, frames) - a);
        }
    }
    const juce::ScopedLock sl (publishLock);
    {
        const juce::ScopedLock il (infoLock);
        stemPath = path;
        jobId = newJobId;
        stemPeaks = std::move (peaks);
        savedStemStart = newStem != nullptr ? newStem->startSample : 0;
    }
    retire (stem.exchange (newStem.release()));
}

std::unique_ptr<Stem> BacklineProcessor::loadStemFile (const juce::File& file, juce::int64 startSample, double hostRate)
{
    juce::AudioFormatManager formats;
    formats.registerBasicFormats();
    std::unique_ptr<juce::AudioFormatReader> reader (formats.createReaderFor (file));
    if (reader == nullptr || reader->lengthInSamples <= 0 || reader->lengthInSamples > (juce::int64) (1 << 30))
        return nullptr;
    auto result = std::make_unique<Stem>();
    result->audio.setSize ((int) juce::jlimit (1u, 2u, reader->numChannels), (int) reader->lengthInSamples);
    reader->read (&result->audio, 0, (int) reader->lengthInSamples, 0, true, true);
    result->startSample = startSample;
    result->sampleRate = hostRate > 0 ? hostRate : reader->sampleRate;
    return result;
}

void BacklineProcessor::setStatus (Status newStatus, const juce::String& message, float progressValue)
{
    {
        const juce::ScopedLock sl (infoLock);
        statusMessage = message;
        statusIndex.store ((int) newStatus);
    }
    *status = (int) newStatus;
    *progress = juce::jlimit (0.0f, 1.0f, progressValue);
}

juce::String BacklineProcessor::getStatusMessage() const { const juce::ScopedLock sl (infoLock); return statusMessage; }
juce::String BacklineProcessor::getStemPath() const { const juce::ScopedLock sl (infoLock); return stemPath; }
juce::String BacklineProcessor::getMidiPath() const
{
    const juce::ScopedLock sl (infoLock);
    const int index = currentTake.load();
    return index >= 0 && index < (int) takes.size() ? takes[(size_t) index].midiPath : juce::String();
}

std::vector<float> BacklineProcessor::getStemPeaks() const { const juce::ScopedLock sl (infoLock); return stemPeaks; }

juce::String BacklineProcessor::getPrompt() const
{
    const juce::ScopedLock sl (infoLock);
    return prompt;
}

void BacklineProcessor::setPrompt (const juce::String& text)
{
    const juce::ScopedLock sl (infoLock);
    prompt = text.substring (0, 500);
}

juce::String BacklineProcessor::getChords() const
{
    const juce::ScopedLock sl (infoLock);
    return chords;
}

void BacklineProcessor::setChords (const juce::String& text)
{
    const juce::ScopedLock sl (infoLock);
    chords = text.substring (0, 2000);
}

juce::var BacklineProcessor::getStylePads() const
{
    const juce::ScopedLock sl (infoLock);
    return juce::JSON::parse (stylePadsJson);
}

bool BacklineProcessor::hasStylePads() const
{
    const juce::ScopedLock sl (infoLock);
    return stylePadsJson.isNotEmpty();
}

void BacklineProcessor::setStylePads (const juce::var& pads)
{
    const juce::ScopedLock sl (infoLock);
    stylePadsJson = pads.isObject() ? juce::JSON::toString (pads, true) : juce::String();
}

void BacklineProcessor::addTake (const Take& newTake)
{
    int index = 0;
    {
        const juce::ScopedLock sl (infoLock);
        takes.push_back (newTake);
        if ((int) takes.size() > maxTakes)
            takes.erase (takes.begin());
        index = (int) takes.size() - 1;
    }
    currentTake.store (index);
    lastSeenTakeParameter.store (index + 1);   // not a request to switch: the parameter follows the new take
    take->setValueNotifyingHost (take->convertTo0to1 ((float) (index + 1)));
}

std::vector<BacklineProcessor::Take> BacklineProcessor::getTakes() const
{
    const juce::ScopedLock sl (infoLock);
    return takes;
}

void BacklineProcessor::pollTakeChange()
{
    const int wanted = take->get();
    if (wanted == lastSeenTakeParameter.exchange (wanted))
        return;
    const auto all = getTakes();
    const int index = wanted - 1;
    if (index < 0 || index >= (int) all.size() || index == currentTake.load())
        return;
    const auto& chosen = all[(size_t) index];
    if (auto loaded = loadStemFile (juce::File (chosen.path), chosen.startSample, currentSampleRate))
    {
        publishStem (std::move (loaded), chosen.path, chosen.jobId);
        currentTake.store (index);
        setStatus (Status::ready, "Take " + juce::String (wanted) + " of " + juce::String ((int) all.size())
                                      + ": " + juce::File (chosen.path).getFileName() + inKeyText (chosen), 1.0f);
    }
    else
    {
        setStatus (Status::error, "Take " + juce::String (wanted) + "'s file is gone: " + chosen.path, 0.0f);
    }
}

juce::String BacklineProcessor::inKeyText (const Take& t)
{
    return t.inKeyShare >= 0.0f ? " (" + juce::String (juce::roundToInt (100.0f * t.inKeyShare)) + "% of its notes in key)"
                                : juce::String();
}

static std::unique_ptr<juce::AudioFormatReader> openAudio (const juce::File& file)
{
    juce::AudioFormatManager formats;
    formats.registerBasicFormats();
    std::unique_ptr<juce::AudioFormatReader> reader (formats.createReaderFor (file));
    if (reader == nullptr || reader->lengthInSamples <= 0 || reader->sampleRate < 8000.0 || reader->numChannels < 1)
        return nullptr;
    return reader;
}

static void readFinite (juce::AudioFormatReader& reader, juce::AudioBuffer<float>& into, int frames)
{
    into.setSize ((int) juce::jmin (2u, reader.numChannels), frames);
    reader.read (&into, 0, frames, 0, true, into.getNumChannels() > 1);
    for (int ch = 0; ch < into.getNumChannels(); ++ch)   // NaN or Inf would be refused by the engine
    {
        auto* samples = into.getWritePointer (ch);
        for (int i = 0; i < frames; ++i)
            if (! std::isfinite (samples[i])) samples[i] = 0.0f;
    }
}

bool BacklineProcessor::setRegionFromFile (const juce::File& file)
{
    auto reader = openAudio (file);
    if (reader == nullptr)
    {
        setStatus (Status::error, "Could not read " + file.getFileName() + " as audio (WAV or AIFF): the region is unchanged.", 0.0f);
        return false;
    }
    auto region = std::make_shared<Region>();
    readFinite (*reader, region->audio, (int) juce::jmin (reader->lengthInSamples, (juce::int64) (maxRegionSeconds * reader->sampleRate)));
    region->sampleRate = reader->sampleRate;
    {
        const juce::ScopedLock sl (infoLock);
        droppedRegion = std::move (region);
        droppedRegionPath = file.getFullPathName();
        droppedAtPass = capturePasses.load();
    }
    setStatus (Status::idle, "Region: " + file.getFileName() + " (dropped). Press Generate.", 0.0f);
    return true;
}

juce::String BacklineProcessor::getDroppedRegionPath() const
{
    const juce::ScopedLock sl (infoLock);
    return droppedRegion != nullptr && droppedAtPass == capturePasses.load() ? droppedRegionPath : juce::String();
}

bool BacklineProcessor::setStyleReference (const juce::File& file)
{
    static constexpr double maxReferenceSeconds = 120.0;
    auto reader = openAudio (file);
    if (reader == nullptr)
    {
        setStatus (Status::error, "Could not read " + file.getFileName() + " as audio (WAV or AIFF): the style "
                                      "reference is unchanged.", 0.0f);
        return false;
    }
    auto reference = std::make_shared<StyleReference>();
    const auto frames = (int) juce::jmin (reader->lengthInSamples, (juce::int64) (maxReferenceSeconds * reader->sampleRate));
    readFinite (*reader, reference->audio, frames);
    reference->sampleRate = reader->sampleRate;
    reference->path = file.getFullPathName();
    // The job id names the content (FNV-1a over the samples and the rate): a reference is uploaded once.
    juce::uint64 hash = 1469598103934665603ull;
    const auto mix = [&hash] (const void* data, size_t bytes)
    {
        for (size_t i = 0; i < bytes; ++i) { hash ^= static_cast<const juce::uint8*> (data)[i]; hash *= 1099511628211ull; }
    };
    mix (&reference->sampleRate, sizeof (double));
    for (int ch = 0; ch < reference->audio.getNumChannels(); ++ch)
        mix (reference->audio.getReadPointer (ch), (size_t) frames * sizeof (float));
    reference->jobId = "reference-" + juce::String::toHexString ((juce::int64) hash);
    const juce::ScopedLock sl (infoLock);
    styleReference = std::move (reference);
    return true;
}

void BacklineProcessor::clearStyleReference()
{
    const juce::ScopedLock sl (infoLock);
    styleReference.reset();
}

std::shared_ptr<const BacklineProcessor::StyleReference> BacklineProcessor::getStyleReference() const
{
    const juce::ScopedLock sl (infoLock);
    return styleReference;
}

void BacklineProcessor::getStateInformation (juce::MemoryBlock& destData)
{
    juce::XmlElement xml ("BACKLINE");
    xml.setAttribute ("version", 1);
    for (auto* p : getParameters())
        if (auto* withId = dynamic_cast<juce::AudioProcessorParameterWithID*> (p))
            if (withId != generate && withId != cancel && withId != progress && withId != status)
                xml.setAttribute ("param_" + withId->paramID, (double) p->getValue());
    {
        const juce::ScopedLock sl (infoLock);
        xml.setAttribute ("status", statusChoices[statusIndex.load()]);
        xml.setAttribute ("message", statusMessage);
        xml.setAttribute ("job_id", jobId);
        xml.setAttribute ("stem_path", stemPath);
        xml.setAttribute ("stem_start_sample", juce::String (savedStemStart));
        xml.setAttribute ("prompt", prompt);
        xml.setAttribute ("chords", chords);
        xml.setAttribute ("style_pads", stylePadsJson);
        xml.setAttribute ("style_path", styleReference != nullptr ? styleReference->path : juce::String());
        xml.setAttribute ("region_path", droppedRegion != nullptr && droppedAtPass == capturePasses.load()
                                             ? droppedRegionPath : juce::String());
    }
    for (const auto& each : getTakes())
    {
        auto* element = xml.createNewChildElement ("TAKE");
        element->setAttribute ("path", each.path);
        element->setAttribute ("job_id", each.jobId);
        element->setAttribute ("start_sample", juce::String (each.startSample));
        element->setAttribute ("midi_path", each.midiPath);
        element->setAttribute ("in_key_share", each.inKeyShare);
    }
    xml.setAttribute ("current_take", currentTake.load() + 1);
    xml.setAttribute ("midi_path", getMidiPath());
    xml.setAttribute ("region_start_sample", juce::String (regionStartSample.load()));
    xml.setAttribute ("region_frames", juce::String (capturedFrames.load()));
    xml.setAttribute ("region_start_ppq", regionStartPpq.load());
    xml.setAttribute ("region_bpm", regionBpm.load());
    xml.setAttribute ("region_beats_per_bar", regionBeatsPerBar.load());
    xml.setAttribute ("sample_rate", currentSampleRate);
    xml.setAttribute ("latency_samples", getLatencySamples());
    copyXmlToBinary (xml, destData);
}

void BacklineProcessor::setStateInformation (const void* data, int sizeInBytes)
{
    auto xml = getXmlFromBinary (data, sizeInBytes);
    if (xml == nullptr || ! xml->hasTagName ("BACKLINE"))
        return;
    for (auto* p : getParameters())
        if (auto* withId = dynamic_cast<juce::AudioProcessorParameterWithID*> (p))
            if (withId != status && xml->hasAttribute ("param_" + withId->paramID))
                p->setValueNotifyingHost ((float) xml->getDoubleAttribute ("param_" + withId->paramID));
    setPrompt (xml->getStringAttribute ("prompt"));
    setChords (xml->getStringAttribute ("chords"));
    setStylePads (juce::JSON::parse (xml->getStringAttribute ("style_pads")));
    {
        std::vector<Take> restored;
        for (auto* element : xml->getChildWithTagNameIterator ("TAKE"))
            restored.push_back ({ element->getStringAttribute ("path"), element->getStringAttribute ("job_id"),
                                  element->getStringAttribute ("start_sample").getLargeIntValue(),
                                  element->getStringAttribute ("midi_path"),
                                  (float) element->getDoubleAttribute ("in_key_share", -1.0) });
        const juce::ScopedLock sl (infoLock);
        takes = std::move (restored);
    }
    currentTake.store (xml->getIntAttribute ("current_take", 0) - 1);
    lastSeenTakeParameter.store (take->get());
    if (const juce::File region (xml->getStringAttribute ("region_path")); region.existsAsFile())
        setRegionFromFile (region);
    if (const juce::File reference (xml->getStringAttribute ("style_path")); reference.existsAsFile())
        setStyleReference (reference);
    else
        clearStyleReference();
    // Reopened project: play the saved stem again without regenerating.
    const juce::File file (xml->getStringAttribute ("stem_path"));
    if (file.existsAsFile())
    {
        const auto start = xml->getStringAttribute ("stem_start_sample").getLargeIntValue();
        if (auto loaded = loadStemFile (file, start, currentSampleRate))
        {
            publishStem (std::move (loaded), file.getFullPathName(), xml->getStringAttribute ("job_id"));
            setStatus (Status::ready, "Stem loaded from " + file.getFullPathName(), 1.0f);
        }
    }
}

juce::AudioProcessorEditor* BacklineProcessor::createEditor() { return new BacklineEditor (*this); }

juce::AudioProcessor* JUCE_CALLTYPE createPluginFilter() { return new BacklineProcessor(); }
