// Backline plugin: the audio side. See ../README.md for the threading rules.
//
// Audio thread (processBlock): reads the playhead, appends the input to a preallocated capture
// buffer, reads the published stem through an atomic pointer. No locks, sockets, file I/O or
// allocation. The one exception STYLE.md allows: in non-real-time (offline) rendering, a block that
// follows a Generate trigger waits (bounded) for the worker to finish the exchange, so an offline
// render contains the result.
// Worker thread (EngineWorker): owns the ZeroMQ socket and runs the bridge protocol.
#pragma once

#include <juce_audio_processors/juce_audio_processors.h>
#include <juce_audio_formats/juce_audio_formats.h>

#include <atomic>
#include <memory>
#include <vector>

class EngineWorker;

// A generated stem, immutable once published to the audio thread.
struct Stem
{
    juce::AudioBuffer<float> audio;   // at the host sample rate
    juce::int64 startSample = 0;      // host timeline sample where stem sample 0 plays
    double sampleRate = 0.0;
};

// The values of the read-only "Status" parameter (a Python host reads them as text).
enum class Status { idle = 0, working, ready, engineNotRunning, error, cancelled };

class BacklineProcessor : public juce::AudioProcessor
{
public:
    BacklineProcessor();
    ~BacklineProcessor() override;

    void prepareToPlay (double sampleRate, int samplesPerBlock) override;
    void releaseResources() override {}
    void reset() override;
    bool isBusesLayoutSupported (const BusesLayout& layouts) const override;
    void processBlock (juce::AudioBuffer<float>&, juce::MidiBuffer&) override;
    using AudioProcessor::processBlock;

    juce::AudioProcessorEditor* createEditor() override;
    bool hasEditor() const override { return true; }

    const juce::String getName() const override { return "Backline"; }
    bool acceptsMidi() const override { return false; }
    bool producesMidi() const override { return false; }
    bool isMidiEffect() const override { return false; }
    double getTailLengthSeconds() const override { return 0.0; }

    int getNumPrograms() override { return 1; }
    int getCurrentProgram() override { return 0; }
    void setCurrentProgram (int) override {}
    const juce::String getProgramName (int) override { return {}; }
    void changeProgramName (int, const juce::String&) override {}

    void getStateInformation (juce::MemoryBlock& destData) override;
    void setStateInformation (const void* data, int sizeInBytes) override;

    // ---- used by the editor and the worker (never from the audio thread) ----
    void requestGenerate();                  // the editor's Generate button
    void requestCancel() { cancelRequested.store (true); }
    bool pollGenerateTrigger();              // rising edge of the "Generate" parameter (any thread, lock free)
    void setStatus (Status, const juce::String& message, float progressValue);
    juce::String getStatusMessage() const;
    Status getStatus() const { return (Status) statusIndex.load(); }
    juce::String getStemPath() const;
    juce::String getMidiPath() const;        // the playing take's transcription, or empty
    // The style prompt typed in the editor (or restored with the project); sent as "style_prompt".
    juce::String getPrompt() const;
    void setPrompt (const juce::String&);
    // The chords the stem follows, typed as "Am F C G7" (one per bar) or "Am:2 F:2"; sent as "chords" with the
    // host's tempo (a model told the chords; the engine says so in words when the loaded one is not).
    juce::String getChords() const;
    void setChords (const juce::String&);
    // The style pads the engine's welcome lists (JSON: instrument -> [{name, x, y}]), kept with the project.
    juce::var getStylePads() const;
    bool hasStylePads() const;
    void setStylePads (const juce::var&);

    // A style reference dropped on the editor (or restored with the project), read once on the
    // message thread; the worker uploads it as a reference job named by its content.
    struct StyleReference
    {
        juce::AudioBuffer<float> audio;
        double sampleRate = 0.0;
        juce::String path, jobId;
    };
    // Takes: the stems generated in this session (and restored with the project), oldest first. The
    // "take" parameter (1 = the first) chooses the one that plays; the worker loads it off the audio thread.
    struct Take
    {
        juce::String path, jobId;
        juce::int64 startSample = 0;
        juce::String midiPath;               // its transcription, when "MIDI too" was on
        float inKeyShare = -1.0f;            // the share of its notes in the song's key (a bass), -1: not scored
    };
    void addTake (const Take&);              // worker, after a generation: the new take becomes current
    std::vector<Take> getTakes() const;
    int getCurrentTake() const { return currentTake.load(); }   // 0-based; -1 before the first
    void pollTakeChange();                   // worker: load the take the parameter names, when it changes
    static juce::String inKeyText (const Take&);   // " (78% of its notes in key)", or empty when not scored
    static constexpr int maxTakes = 16;

    // An audio file dropped on the waveform (or restored with the project) as the region: it is used by
    // Generate until Record captures a new pass. Its stem plays from the song's start (sample 0).
    bool setRegionFromFile (const juce::File&);
    juce::String getDroppedRegionPath() const;

    bool setStyleReference (const juce::File&);   // false (and a status in words) if the file cannot be read
    void clearStyleReference();
    std::shared_ptr<const StyleReference> getStyleReference() const;
    std::vector<float> getStemPeaks() const;

    struct Region
    {
        juce::AudioBuffer<float> audio;
        juce::int64 startSample = 0;
        double startPpq = 0.0, bpm = 0.0;
        int beatsPerBar = 0;                 // 0: the host did not say
        double sampleRate = 0.0;
    };
    // Freeze the capture and copy the region out (worker thread). False if nothing was recorded.
    bool takeRegion (Region& out);
    void releaseCapture();                   // unfreeze; the next played block starts a new region
    // Publish a stem to the audio thread and remember where it was saved (worker or message thread).
    void publishStem (std::unique_ptr<Stem> stem, const juce::String& path, const juce::String& jobId);
    static std::unique_ptr<Stem> loadStemFile (const juce::File& file, juce::int64 startSample, double hostRate);

    // Parameters (pedalboard names them generate, record, pass_input, cancel, instrument, seed, steps, bass_takes,
    // cfg_context, cfg_style, beat_lock, chord_lock, status, progress, free_run, fast_draft).
    juce::AudioParameterBool* generate = nullptr;
    juce::AudioParameterBool* record = nullptr;
    juce::AudioParameterBool* passInput = nullptr;
    juce::AudioParameterBool* cancel = nullptr;
    juce::AudioParameterBool* freeRun = nullptr;    // ignore the host transport: count samples from reset()
    juce::AudioParameterChoice* instrument = nullptr;
    juce::AudioParameterInt* seed = nullptr;
    juce::AudioParameterInt* steps = nullptr;
    juce::AudioParameterInt* bassTakes = nullptr;   // 0: the model's default
    juce::AudioParameterBool* fastDraft = nullptr;  // the few-step sampler; the guidance scales are then not sent
    juce::AudioParameterFloat* cfgContext = nullptr;
    juce::AudioParameterFloat* cfgStyle = nullptr;
    juce::AudioParameterFloat* cfgTempo = nullptr;   // beat lock
    juce::AudioParameterFloat* cfgChords = nullptr;  // chord lock
    juce::AudioParameterChoice* status = nullptr;   // read-only: written by the plugin
    juce::AudioParameterFloat* progress = nullptr;  // read-only: written by the plugin
    juce::AudioParameterInt* take = nullptr;        // which take plays (1 = the first)
    // What Generate makes: a new take, a variation of the take that plays, or that take with some bars redone.
    juce::AudioParameterChoice* action = nullptr;
    juce::AudioParameterFloat* variation = nullptr;  // a variation's distance from the take: 0 the take, 1 a new one
    juce::AudioParameterInt* redoFromBar = nullptr;  // Redo bars: from the start of this bar of the song...
    juce::AudioParameterInt* redoToBar = nullptr;    // ...to the start of this one (needs the host's tempo)
    juce::AudioParameterInt* loopBars = nullptr;     // the stem repeats every this many bars; 0: no loop
    juce::AudioParameterFloat* stereoWidth = nullptr;
    juce::AudioParameterFloat* styleBlend = nullptr; // with a reference and a prompt: 0 the reference, 1 the prompt
    juce::AudioParameterBool* midi = nullptr;        // also the stem transcribed as MIDI, to drag out
    juce::AudioParameterBool* padOn = nullptr;       // the style is the point on the style pad (not the words)
    juce::AudioParameterFloat* padX = nullptr;       // the point, each from -1 to 1
    juce::AudioParameterFloat* padY = nullptr;
    static const juce::StringArray actionChoices;

    std::atomic<bool> cancelRequested { false };
    std::atomic<int> jobsRequested { 0 }, jobsFinished { 0 };

    static constexpr double maxRegionSeconds = 180.0;
    static constexpr double offlineWaitSeconds = 300.0;

private:
    void allocateCapture (double sampleRate);
    void retire (Stem* old);
    bool waitUntilAudioIdle (int timeoutMs) const;

    // ---- capture (audio thread writes; worker reads after freezing) ----
    juce::AudioBuffer<float> captureBuffer;                  // preallocated in prepareToPlay
    juce::CriticalSection captureAllocLock;                  // prepareToPlay vs takeRegion; never the audio thread
    std::atomic<juce::int64> capturedFrames { 0 };
    std::atomic<juce::int64> regionStartSample { 0 };
    std::atomic<double> regionStartPpq { 0.0 }, regionBpm { 0.0 };
    std::atomic<int> regionBeatsPerBar { 0 };
    std::atomic<bool> captureFrozen { false }, restartCapture { true };
    std::atomic<int> capturePasses { 0 };                    // audio thread: +1 at each new pass
    juce::int64 captureNextPosition = -1;                    // audio thread only (and prepareToPlay)
    bool captureClosed = false, lastRecordOn = false;        // audio thread only (and prepareToPlay)
    int captureChannels = 0;
    double currentSampleRate = 0.0;

    // ---- playback ----
    std::atomic<Stem*> stem { nullptr };
    std::vector<std::unique_ptr<Stem>> graveyard;            // stems the audio thread might still read
    juce::CriticalSection publishLock;                        // publishers only, never the audio thread

    // The audio thread sets this while it touches the capture buffer or the stem (Dekker-style handshake,
    // sequentially consistent atomics): the worker frees or reads only after seeing it false.
    std::atomic<bool> audioBusy { false };

    std::atomic<bool> lastGenerateValue { false };
    std::atomic<juce::int64> freeRunPosition { 0 };         // position used when the host gives none

    // ---- status for the editor and the saved state ----
    // The status itself (hosts such as dawdreamer write every parameter each block, so the parameter
    // is only a mirror for hosts that read it; the saved state reports this value).
    std::atomic<int> statusIndex { 0 };
    mutable juce::CriticalSection infoLock;
    juce::String statusMessage { "Idle. Play the region with Record on, then press Generate." };
    juce::String stemPath, jobId, prompt, chords, stylePadsJson;
    std::shared_ptr<const StyleReference> styleReference;
    std::vector<Take> takes;
    std::shared_ptr<const Region> droppedRegion;
    juce::String droppedRegionPath;
    int droppedAtPass = -1;
    std::atomic<int> currentTake { -1 }, lastSeenTakeParameter { 0 };
    std::vector<float> stemPeaks;
    juce::int64 savedStemStart = 0;

    std::unique_ptr<EngineWorker> worker;

    JUCE_DECLARE_NON_COPYABLE_WITH_LEAK_DETECTOR (BacklineProcessor)
};
