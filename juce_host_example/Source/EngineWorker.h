// The one thread that owns the plugin's ZeroMQ DEALER socket and speaks plugin_bridge/PROTOCOL.md.
#pragma once

#include <juce_core/juce_core.h>

class BacklineProcessor;

class EngineWorker : public juce::Thread
{
public:
    explicit EngineWorker (BacklineProcessor& p) : juce::Thread ("Backline engine worker"), processor (p) {}
    void run() override;

    // Where the engine's connection file is looked for: $BACKLINE_RUNTIME_DIR/engine.json, else
    // ~/.cache/backline/runtime/engine.json (PROTOCOL.md).
    static juce::File connectionFile();
    // Where finished stems are saved for drag-out: $BACKLINE_STEMS_DIR, else ~/Music/Backline.
    static juce::File stemsFolder();

private:
    void runJob (void* zmqContext);
    void lookUpStylePads (void* zmqContext);   // the engine's welcome's style pads, before any job
    BacklineProcessor& processor;
};
