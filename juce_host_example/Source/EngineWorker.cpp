#include "EngineWorker.h"
#include "PluginProcessor.h"

#include <juce_cryptography/juce_cryptography.h>
#include <zmq.hpp>

#include <chrono>
#include <cstring>
#include <map>
#include <stdexcept>

namespace
{
const char* startHint = "Start it in a terminal with: backline serve";

// A failure to show the producer: which status, and the words.
struct JobFailure : std::runtime_error
{
    JobFailure (Status s, const juce::String& m) : std::runtime_error (m.toStdString()), status (s), message (m) {}
    Status status;
    juce::String message;
};

struct Message
{
    juce::var header;
    std::vector<zmq::message_t> blobs;
    juce::String type() const { return header.getProperty ("type", {}).toString(); }
};

juce::String envOr (const char* name, const juce::String& fallback)
{
    const auto value = juce::SystemStats::getEnvironmentVariable (name, {});
    return value.isNotEmpty() ? value : fallback;
}

// The region as the wire carries it (interleaved little-endian float32 on the little-endian hosts we build for),
// read on the fly, so its SHA-256 (the submit's audio_sha256) needs no second copy of the region.
class InterleavedStream final : public juce::InputStream
{
public:
    explicit InterleavedStream (const juce::AudioBuffer<float>& a)
        : audio (a), total ((juce::int64) a.getNumSamples() * a.getNumChannels() * (juce::int64) sizeof (float)) {}

    juce::int64 getTotalLength() override { return total; }
    bool isExhausted() override { return position >= total; }
    juce::int64 getPosition() override { return position; }
    bool setPosition (juce::int64 newPosition) override
    {
        position = juce::jlimit<juce::int64> (0, total, newPosition);
        return true;
    }
    int read (void* destination, int bytes) override
    {
        auto* out = static_cast<char*> (destination);
        const int channels = audio.getNumChannels();
        int done = 0;
        while (done < bytes && position < total)
        {
            const auto sample = position / (juce::int64) sizeof (float);
            const int offset = (int) (position % (juce::int64) sizeof (float));
            const float value = audio.getSample ((int) (sample % channels), (int) (sample / channels));
            const int count = juce::jmin (bytes - done, (int) sizeof (float) - offset);
            std::memcpy (out + done, reinterpret_cast<const char*> (&value) + offset, (size_t) count);
            done += count;
            position += count;
        }
        return done;
    }

private:
    const juce::AudioBuffer<float>& audio;
    const juce::int64 total;
    juce::int64 position = 0;
};

juce::String audioSha256 (const juce::AudioBuffer<float>& audio)
{
    InterleavedStream stream (audio);
    return juce::SHA256 (stream).toHexString();
}

// One connection to the engine: requests with "req" ids, replies matched to them, pushes kept aside.
class Connection
{
public:
    Connection (zmq::context_t& context, juce::Thread& owner, const juce::String& address, juce::String tokenIn)
        : socket (context, zmq::socket_type::dealer), thread (owner), token (std::move (tokenIn))
    {
        socket.set (zmq::sockopt::linger, 0);
        socket.connect (address.toStdString());
    }
    ~Connection() { socket.close(); }

    int send (juce::DynamicObject::Ptr header, const void* blob = nullptr, size_t blobBytes = 0)
    {
        const int req = ++nextReq;
        header->setProperty ("v", 2);   // PROTOCOL.md version 2: submit carries audio_sha256
        header->setProperty ("token", token);
        header->setProperty ("req", req);
        const auto text = juce::JSON::toString (juce::var (header.get()), true).toStdString();
        if (blob != nullptr)
        {
            socket.send (zmq::buffer (text), zmq::send_flags::sndmore);
            socket.send (zmq::const_buffer (blob, blobBytes), zmq::send_flags::none);
        }
        else
        {
            socket.send (zmq::buffer (text), zmq::send_flags::none);
        }
        return req;
    }

    // The next message within timeoutMs (false on timeout or when the thread must stop).
    bool receive (Message& out, int timeoutMs)
    {
        const auto deadline = juce::Time::getMillisecondCounterHiRes() + timeoutMs;
        while (! thread.threadShouldExit())
        {
            const auto left = deadline - juce::Time::getMillisecondCounterHiRes();
            if (left <= 0)
                return false;
            zmq::pollitem_t items[] = { { socket.handle(), 0, ZMQ_POLLIN, 0 } };
            zmq::poll (items, 1, std::chrono::milliseconds ((long) juce::jmin (50.0, left) + 1));
            if ((items[0].revents & ZMQ_POLLIN) == 0)
                continue;
            std::vector<zmq::message_t> frames;
            do
            {
                zmq::message_t frame;
                if (! socket.recv (frame, zmq::recv_flags::none))
                    break;
                const bool more = frame.more();
                frames.push_back (std::move (frame));
                if (! more)
                    break;
            } while (true);
            if (frames.empty())
                continue;
            out.header = juce::JSON::parse (juce::String::fromUTF8 (frames[0].data<char>(), (int) frames[0].size()));
            out.blobs.clear();
            for (size_t i = 1; i < frames.size(); ++i)
                out.blobs.push_back (std::move (frames[i]));
            lastHeard = juce::Time::getMillisecondCounterHiRes();
            return true;
        }
        return false;
    }

    double lastHeard = juce::Time::getMillisecondCounterHiRes();

private:
    zmq::socket_t socket;
    juce::Thread& thread;
    juce::String token;
    int nextReq = 0;
};

juce::DynamicObject::Ptr request (const char* type)
{
    juce::DynamicObject::Ptr header (new juce::DynamicObject());
    header->setProperty ("type", type);
    return header;
}

int intField (const juce::var& object, const char* name, int fallback)
{
    const auto value = object.getProperty (name, fallback);
    return value.isVoid() ? fallback : (int) value;
}

[[noreturn]] void failWith (const juce::var& error)
{
    const auto code = error.getProperty ("code", "error").toString();
    const auto text = error.getProperty ("message", "the engine refused the request").toString();
    throw JobFailure (Status::error, "Engine error (" + code + "): " + text);
}

// Where the engine listens: its Unix socket when it advertises one (same machine, about three times loopback TCP's
// throughput; PROTOCOL.md; it only advertises a socket it has bound), else TCP. Empty when the file is unreadable.
juce::String engineEndpoint (const juce::var& info)
{
    const auto host = info.getProperty ("host", "127.0.0.1").toString();
    const int port = intField (info, "port", 0);
    if (port <= 0 || info.getProperty ("token", {}).toString().isEmpty())
        return {};
    const auto ipc = info.getProperty ("ipc_endpoint", {}).toString();
    return ipc.startsWith ("ipc://") ? ipc : "tcp://" + (host.contains (":") ? "[" + host + "]" : host) + ":" + juce::String (port);
}
}

juce::File EngineWorker::connectionFile()
{
    const auto dir = envOr ("BACKLINE_RUNTIME_DIR",
                            juce::File::getSpecialLocation (juce::File::userHomeDirectory).getChildFile (".cache/backline/runtime").getFullPathName());
    return juce::File (dir).getChildFile ("engine.json");
}

juce::File EngineWorker::stemsFolder()
{
    return juce::File (envOr ("BACKLINE_STEMS_DIR",
                              juce::File::getSpecialLocation (juce::File::userMusicDirectory).getChildFile ("Backline").getFullPathName()));
}

void EngineWorker::run()
{
    // The context lives on this thread's stack: created and terminated here, never by a static destructor.
    zmq::context_t context (1);
    int handled = processor.jobsFinished.load();
    double nextPadLookUp = 0.0;
    while (! threadShouldExit())
    {
        processor.pollGenerateTrigger();
        processor.pollTakeChange();
        if (! processor.hasStylePads() && juce::Time::getMillisecondCounterHiRes() >= nextPadLookUp)
        {
            nextPadLookUp = juce::Time::getMillisecondCounterHiRes() + 5000.0;
            lookUpStylePads (&context);
        }
        if (processor.jobsRequested.load() > handled)
        {
            handled = processor.jobsRequested.load();   // requests that arrive during a job start the next one
            runJob (&context);
            processor.jobsFinished.store (handled);
            continue;
        }
        wait (10);
    }
    context.close();
}

void EngineWorker::lookUpStylePads (void* contextPointer)
{
    // The style pads come with the engine's welcome: asked for as soon as an engine runs, so the pad shows its
    // sounds before the first Generate. Any failure is silent: the next job says what is wrong, in words.
    const auto file = connectionFile();
    if (! file.existsAsFile())
        return;
    const auto info = juce::JSON::parse (file);
    const auto where = engineEndpoint (info);
    if (where.isEmpty())
        return;
    try
    {
        Connection connection (*static_cast<zmq::context_t*> (contextPointer), *this, where, info.getProperty ("token", {}).toString());
        auto hello = request ("hello");
        hello->setProperty ("client", "Backline plugin " JucePlugin_VersionString);
        connection.send (hello);
        Message m;
        if (connection.receive (m, 1000) && m.type() == "welcome" && m.header.getProperty ("style_pads", {}).isObject())
            processor.setStylePads (m.header.getProperty ("style_pads", {}));
    }
    catch (const zmq::error_t&) {}
}

void EngineWorker::runJob (void* contextPointer)
{
    auto& context = *static_cast<zmq::context_t*> (contextPointer);
    processor.cancelRequested.store (false);
    BacklineProcessor::Region region;
    if (! processor.takeRegion (region))
    {
        processor.releaseCapture();
        processor.setStatus (Status::error, "Nothing recorded yet: play the region with Record on, then press Generate.", 0.0f);
        return;
    }

    const auto jobId = "backline-" + juce::Uuid().toDashedString();
    juce::String stemFilePath;
    try
    {
        processor.setStatus (Status::working, "Connecting to the Backline engine...", 0.0f);
        const auto file = connectionFile();
        if (! file.existsAsFile())
            throw JobFailure (Status::engineNotRunning, "The Backline engine is not running (no connection file at "
                                                            + file.getFullPathName() + "). " + startHint);
        const auto info = juce::JSON::parse (file);
        const auto host = info.getProperty ("host", "127.0.0.1").toString();
        const int port = intField (info, "port", 0);
        const auto where = engineEndpoint (info);
        if (where.isEmpty())
            throw JobFailure (Status::engineNotRunning, "The engine's connection file " + file.getFullPathName()
                                                            + " is unreadable. " + startHint);
        Connection connection (context, *this, where, info.getProperty ("token", {}).toString());

        juce::var lastJob;
        const auto isPush = [] (const Message& m) { return m.header.getProperty ("req", {}).isVoid(); };
        // Wait for the reply to `req`, keeping job pushes and progress as they pass.
        const auto await = [&] (int req, int timeoutMs, const juce::String& what) -> Message
        {
            const auto deadline = juce::Time::getMillisecondCounterHiRes() + timeoutMs;
            Message m;
            while (! threadShouldExit())
            {
                const auto left = (int) (deadline - juce::Time::getMillisecondCounterHiRes());
                if (left <= 0 || ! connection.receive (m, left))
                    break;
                if (isPush (m))
                {
                    if (m.type() == "job") lastJob = m.header;
                    continue;
                }
                if ((int) m.header.getProperty ("req", -1) != req)
                    continue;
                if (m.type() == "error")
                    failWith (m.header);
                return m;
            }
            if (threadShouldExit())
                throw JobFailure (Status::cancelled, "Stopped.");
            throw JobFailure (Status::engineNotRunning, "The Backline engine at " + host + ":" + juce::String (port)
                                                            + " did not answer (" + what + "). It may have stopped. " + startHint);
        };

        // ---- hello ----
        auto hello = request ("hello");
        hello->setProperty ("client", "Backline plugin " JucePlugin_VersionString);
        const auto welcome = await (connection.send (hello), 3000, "hello").header;
        if (welcome.getProperty ("style_pads", {}).isObject())
            processor.setStylePads (welcome.getProperty ("style_pads", {}));
        const auto limits = welcome.getProperty ("limits", {});
        const double heartbeat = (double) limits.getProperty ("heartbeat_interval_seconds", 1.0);
        const int silenceMs = (int) juce::jmax (5000.0, 8000.0 * heartbeat);
        const int chunkFrames = juce::jlimit (1, 32768, intField (limits, "max_chunk_frames", 16384));
        const int window = juce::jmax (1, intField (limits, "upload_window_chunks", 4));

        // ---- submit + upload (at most `window` chunks unacknowledged), for the region and a style reference ----
        const auto upload = [&] (const juce::String& id, juce::DynamicObject::Ptr jobParams, const juce::AudioBuffer<float>& audio,
                                 double rate, const juce::String& what)
        {
            const int channels = audio.getNumChannels();
            const int frames = audio.getNumSamples();
            auto submit = request ("submit");
            submit->setProperty ("job_id", id);
            submit->setProperty ("params", juce::var (jobParams.get()));
            submit->setProperty ("sample_rate", (int) std::lround (rate));
            submit->setProperty ("channels", channels);
            submit->setProperty ("frames", frames);
            submit->setProperty ("audio_sha256", audioSha256 (audio));   // the region's content address
            const auto snapshot = await (connection.send (submit), 5000, "submit").header;
            const auto submittedState = snapshot.getProperty ("state", {}).toString();
            if (submittedState != "submitted" && submittedState != "uploading")
                return snapshot;   // already uploaded (a resubmitted id): nothing to send
            processor.setStatus (Status::working, "Uploading the " + what + "...", 0.0f);
            const int chunks = (frames + chunkFrames - 1) / chunkFrames;
            std::vector<float> interleaved;
            std::map<int, int> inFlight;   // req -> chunk index
            int nextChunk = intField (snapshot, "next_index", 0), acknowledged = nextChunk;
            while (acknowledged < chunks)
            {
                while (nextChunk < chunks && (int) inFlight.size() < window)
                {
                    const int start = nextChunk * chunkFrames, count = juce::jmin (chunkFrames, frames - start);
                    interleaved.resize ((size_t) count * (size_t) channels);
                    for (int i = 0; i < count; ++i)
                        for (int ch = 0; ch < channels; ++ch)
                            interleaved[(size_t) (i * channels + ch)] = audio.getSample (ch, start + i);   // little-endian hosts
                    auto chunk = request ("chunk");
                    chunk->setProperty ("job_id", id);
                    chunk->setProperty ("index", nextChunk);
                    chunk->setProperty ("start_frame", start);
                    chunk->setProperty ("frames", count);
                    inFlight[connection.send (chunk, interleaved.data(), interleaved.size() * sizeof (float))] = nextChunk;
                    ++nextChunk;
                }
                Message m;
                if (! connection.receive (m, silenceMs))
                    throw JobFailure (Status::engineNotRunning, "The Backline engine stopped answering during the upload. " + juce::String (startHint));
                if (isPush (m))
                    continue;
                const int req = (int) m.header.getProperty ("req", -1);
                if (inFlight.count (req) == 0)
                    continue;
                if (m.type() == "error")
                    failWith (m.header);
                inFlight.erase (req);
                ++acknowledged;
                processor.setStatus (Status::working, "Uploading the " + what + "...", 0.1f * (float) acknowledged / (float) chunks);
            }
            auto startRequest = request ("start");
            startRequest->setProperty ("job_id", id);
            return await (connection.send (startRequest), 5000, "start").header;
        };

        juce::DynamicObject::Ptr params (new juce::DynamicObject());
        params->setProperty ("instrument", processor.instrument->getCurrentChoiceName());
        params->setProperty ("seed", processor.seed->get());
        if (processor.steps->get() > 0)   // 0: the model's default (a distilled one takes a few)
            params->setProperty ("steps", processor.steps->get());
        // Takes to choose among by key: a bass only (drums have no key); 0: the model's default
        if (processor.bassTakes->get() > 0 && processor.instrument->getCurrentChoiceName() == "bass")
            params->setProperty ("candidates", processor.bassTakes->get());
        // A fast draft is the engine's few-step sampler, its guidance built in; else the guidance scales, each sent
        // under its parameter ID (the engine's name for it); 0: the model's own default
        if (processor.fastDraft->get())
            params->setProperty ("sampler", "few_step");
        else
            for (auto* scale : { processor.cfgContext, processor.cfgStyle, processor.cfgTempo, processor.cfgChords })
                if (scale->get() > 0.0f)
                    params->setProperty (juce::Identifier (scale->getParameterID()), (double) scale->get());
        const auto prompt = processor.getPrompt().trim();
        if (processor.padOn->get())   // the point on the style pad stands for the words
            params->setProperty ("style_pad", juce::Array<juce::var> { (double) processor.padX->get(), (double) processor.padY->get() });
        else if (prompt.isNotEmpty())
            params->setProperty ("style_prompt", prompt);
        const auto chords = processor.getChords().trim();
        if (chords.isNotEmpty())
            params->setProperty ("chords", chords);
        // The host's tempo and the region's position, so bar-based controls line up with the song.
        if (region.bpm >= 20.0 && region.bpm <= 400.0)
        {
            params->setProperty ("tempo_bpm", region.bpm);
            if (region.startPpq >= 0.0)
                params->setProperty ("region_start_beats", region.startPpq);
            if (region.beatsPerBar >= 1 && region.beatsPerBar <= 32)
                params->setProperty ("beats_per_bar", region.beatsPerBar);
        }
        // Variation and Redo bars start from the take that plays (the engine holds its result by job id).
        const auto action = processor.action->getIndex();
        if (action > 0)
        {
            const auto takes = processor.getTakes();
            const auto current = processor.getCurrentTake();
            if (current < 0 || current >= (int) takes.size())
                throw JobFailure (Status::error, "Generate a take first: a variation or redone bars start from the take that plays.");
            params->setProperty ("source_job_id", takes[(size_t) current].jobId);
            if (action == 1)
            {
                params->setProperty ("variation_strength", (double) processor.variation->get());
            }
            else
            {
                if (! params->hasProperty ("tempo_bpm"))
                    throw JobFailure (Status::error, "Redo bars needs the song's tempo: play the region from the host's transport.");
                const int from = processor.redoFromBar->get(), to = processor.redoToBar->get();
                if (to <= from)
                    throw JobFailure (Status::error, "Redo bars: the last bar (" + juce::String (to) + ") must come after the first ("
                                                         + juce::String (from) + ").");
                params->setProperty ("regenerate_bars", juce::Array<juce::var> { juce::String (from), juce::String (to) });
            }
        }
        if (processor.loopBars->get() > 0)
        {
            if (! params->hasProperty ("tempo_bpm"))
                throw JobFailure (Status::error, "Loop bars needs the song's tempo: play the region from the host's transport.");
            params->setProperty ("loop_bars", processor.loopBars->get());
        }
        if (processor.stereoWidth->get() > 0.0f)
            params->setProperty ("stereo_width", (double) processor.stereoWidth->get());
        if (processor.midi->get())
            params->setProperty ("midi", true);
        // A dropped style reference goes first, as its own job named by its content (uploaded once).
        if (const auto reference = processor.getStyleReference())
        {
            juce::DynamicObject::Ptr referenceParams (new juce::DynamicObject());
            referenceParams->setProperty ("kind", "reference");
            auto snapshot = upload (reference->jobId, referenceParams, reference->audio, reference->sampleRate, "style reference");
            while (snapshot.getProperty ("state", {}).toString() != "done")
            {
                const auto state = snapshot.getProperty ("state", {}).toString();
                if (state == "failed")
                    failWith (snapshot.getProperty ("error", {}));
                if (state == "cancelled")
                    throw JobFailure (Status::cancelled, "Cancelled.");
                Message m;
                if (! connection.receive (m, silenceMs))
                    throw JobFailure (Status::engineNotRunning, "The Backline engine stopped answering. " + juce::String (startHint));
                if (m.type() == "job" && m.header.getProperty ("job_id", {}).toString() == reference->jobId)
                    snapshot = m.header;
            }
            params->setProperty ("style_job_id", reference->jobId);
            if (params->hasProperty ("style_prompt") || params->hasProperty ("style_pad"))   // a reference and words: blended
                params->setProperty ("style_ratio", (double) processor.styleBlend->get());
        }
        // For testing against `serve --demo-generator` (e.g. {"demo_step_seconds": 0.5}): extra parameters
        // from the environment, merged as given. The real engine refuses unknown ones (bad_request).
        const auto extra = juce::JSON::parse (juce::SystemStats::getEnvironmentVariable ("BACKLINE_EXTRA_PARAMS", {}));
        if (auto* extraObject = extra.getDynamicObject())
            for (const auto& property : extraObject->getProperties())
                params->setProperty (property.name, property.value);
        lastJob = upload (jobId, params, region.audio, region.sampleRate, "region");

        // ---- follow pushes until the job is final ----
        processor.setStatus (Status::working, "Generating...", 0.1f);
        bool cancelSent = false;
        while (true)
        {
            const auto state = lastJob.getProperty ("state", {}).toString();
            if (state == "done" || state == "failed" || state == "cancelled")
                break;
            if (! cancelSent && (processor.cancelRequested.load() || processor.cancel->get()))
            {
                auto cancelRequest = request ("cancel");
                cancelRequest->setProperty ("job_id", jobId);
                connection.send (cancelRequest);
                cancelSent = true;
                processor.setStatus (Status::working, "Cancelling...", processor.progress->get());
            }
            Message m;
            if (! connection.receive (m, 100))
            {
                if (threadShouldExit())
                    throw JobFailure (Status::cancelled, "Stopped.");
                if (juce::Time::getMillisecondCounterHiRes() - connection.lastHeard > silenceMs)
                    throw JobFailure (Status::engineNotRunning, "The Backline engine stopped answering while generating. "
                                                                    + juce::String (startHint));
                continue;
            }
            const auto type = m.type();
            if (type == "job" && m.header.getProperty ("job_id", {}).toString() == jobId)
                lastJob = m.header;
            else if (type == "progress" && m.header.getProperty ("job_id", {}).toString() == jobId)
            {
                const int step = intField (m.header, "step", 0), total = juce::jmax (1, intField (m.header, "steps", 1));
                processor.setStatus (Status::working, "Generating: step " + juce::String (step) + " of " + juce::String (total),
                                     0.1f + 0.8f * (float) step / (float) total);
            }
            else if (type == "error" && ! m.header.getProperty ("req", {}).isVoid() && ! cancelSent)
                failWith (m.header);
        }
        const auto state = lastJob.getProperty ("state", {}).toString();
        if (state == "cancelled")
            throw JobFailure (Status::cancelled, "Cancelled.");
        if (state == "failed")
            failWith (lastJob.getProperty ("error", {}));

        // ---- fetch the result ----
        const auto result = lastJob.getProperty ("result", {});
        const int resultRate = intField (result, "sample_rate", 0), resultChannels = intField (result, "channels", 0);
        const int resultFrames = intField (result, "frames", 0), resultChunks = intField (result, "chunks", 0);
        if (resultRate <= 0 || resultChannels < 1 || resultChannels > 2 || resultFrames <= 0 || resultChunks <= 0)
            throw JobFailure (Status::error, "The engine returned an empty or malformed result.");
        juce::AudioBuffer<float> received (resultChannels, resultFrames);
        received.clear();
        processor.setStatus (Status::working, "Receiving the stem...", 0.9f);
        std::map<int, int> fetching;
        int nextFetch = 0, fetched = 0;
        while (fetched < resultChunks)
        {
            while (nextFetch < resultChunks && (int) fetching.size() < window)
            {
                auto fetch = request ("fetch");
                fetch->setProperty ("job_id", jobId);
                fetch->setProperty ("index", nextFetch);
                fetching[connection.send (fetch)] = nextFetch++;
            }
            Message m;
            if (! connection.receive (m, silenceMs))
                throw JobFailure (Status::engineNotRunning, "The Backline engine stopped answering while sending the stem. " + juce::String (startHint));
            const int req = (int) m.header.getProperty ("req", -1);
            if (isPush (m) || fetching.count (req) == 0)
                continue;
            if (m.type() == "error")
                failWith (m.header);
            fetching.erase (req);
            const int startFrame = intField (m.header, "start_frame", -1), count = intField (m.header, "frames", -1);
            if (m.blobs.size() != 1 || startFrame < 0 || count < 0 || startFrame + count > resultFrames
                || m.blobs[0].size() != (size_t) count * (size_t) resultChannels * sizeof (float))
                throw JobFailure (Status::error, "The engine sent a malformed result chunk.");
            const auto* samples = m.blobs[0].data<float>();
            for (int i = 0; i < count; ++i)
                for (int ch = 0; ch < resultChannels; ++ch)
                {
                    const float x = samples[(size_t) (i * resultChannels + ch)];
                    received.setSample (ch, startFrame + i, std::isfinite (x) ? x : 0.0f);
                }
            ++fetched;
        }

        // ---- to the host rate, saved for drag-out, published to the audio thread ----
        auto newStem = std::make_unique<Stem>();
        newStem->startSample = region.startSample;
        newStem->sampleRate = region.sampleRate;
        if (std::abs (resultRate - region.sampleRate) < 0.5)
        {
            newStem->audio = std::move (received);
        }
        else
        {
            const double ratio = resultRate / region.sampleRate;
            const int outFrames = (int) std::ceil (resultFrames / ratio);
            newStem->audio.setSize (resultChannels, outFrames);
            newStem->audio.clear();
            for (int ch = 0; ch < resultChannels; ++ch)
            {
                juce::LagrangeInterpolator interpolator;
                interpolator.process (ratio, received.getReadPointer (ch), newStem->audio.getWritePointer (ch), outFrames,
                                      resultFrames, 0);
            }
        }

        auto folder = stemsFolder();
        folder.createDirectory();
        const auto wav = folder.getChildFile ("backline-" + processor.instrument->getCurrentChoiceName() + "-"
                                              + jobId.fromFirstOccurrenceOf ("backline-", false, false).substring (0, 8) + ".wav");
        {
            std::unique_ptr<juce::OutputStream> stream (new juce::FileOutputStream (wav));
            juce::WavAudioFormat format;
            std::unique_ptr<juce::AudioFormatWriter> writer (
                format.createWriterFor (stream.get(), region.sampleRate, (unsigned int) newStem->audio.getNumChannels(), 32, {}, 0));
            if (writer != nullptr)
            {
                stream.release();   // the writer owns the stream now
                writer->writeFromAudioSampleBuffer (newStem->audio, 0, newStem->audio.getNumSamples());
                stemFilePath = wav.getFullPathName();
            }
        }
        // The transcription, when asked for, beside the WAV (drag it out as a MIDI clip).
        juce::String midiFilePath;
        const auto midiText = result.getProperty ("info", {}).getProperty ("midi_base64", {}).toString();
        if (midiText.isNotEmpty())
        {
            juce::MemoryOutputStream midiData;
            const auto midiFile = wav.withFileExtension ("mid");
            if (juce::Base64::convertFromBase64 (midiData, midiText) && midiFile.replaceWithData (midiData.getData(), midiData.getDataSize()))
                midiFilePath = midiFile.getFullPathName();
        }
        // A bass is chosen among takes by the share of its notes in the song's key: kept with the take.
        float inKeyShare = -1.0f;
        const auto candidates = result.getProperty ("info", {}).getProperty ("controls", {}).getProperty ("candidates", {});
        if (const auto* shares = candidates.getProperty ("in_key_share", {}).getArray())
        {
            const int chosen = (int) candidates.getProperty ("chosen", 0);
            if (chosen >= 0 && chosen < shares->size() && (shares->getReference (chosen).isDouble() || shares->getReference (chosen).isInt()))
                inKeyShare = (float) (double) shares->getReference (chosen);
        }
        const auto startSample = newStem->startSample;
        processor.publishStem (std::move (newStem), stemFilePath, jobId);
        const BacklineProcessor::Take made { stemFilePath, jobId, startSample, midiFilePath, inKeyShare };
        processor.addTake (made);
        processor.setStatus (Status::ready, stemFilePath.isNotEmpty() ? "Stem ready" + BacklineProcessor::inKeyText (made) + ", saved to " + stemFilePath
                                                                      : "Stem ready (could not save it to " + folder.getFullPathName() + ")", 1.0f);
    }
    catch (const JobFailure& failure)
    {
        processor.setStatus (failure.status, failure.message, 0.0f);
    }
    catch (const zmq::error_t& error)
    {
        processor.setStatus (Status::error, "Connection error: " + juce::String (error.what()), 0.0f);
    }
    catch (const std::exception& error)
    {
        processor.setStatus (Status::error, "Error: " + juce::String (error.what()), 0.0f);
    }
    processor.releaseCapture();
}
