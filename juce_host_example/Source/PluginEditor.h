#pragma once

#include "PluginProcessor.h"
#include <juce_gui_basics/juce_gui_basics.h>

// A component whose file (a saved stem, its MIDI) is dragged out of the window into the DAW.
class FileDragSource : public juce::Component
{
public:
    explicit FileDragSource (BacklineProcessor& p) : processor (p) {}
    void mouseDrag (const juce::MouseEvent&) override;
    void mouseUp (const juce::MouseEvent&) override { dragging = false; }

protected:
    virtual juce::String fileToDrag() const = 0;
    BacklineProcessor& processor;

private:
    bool dragging = false;
};

// The result's waveform; drag it into the DAW to drop the saved WAV on a new track.
class StemView : public FileDragSource, public juce::FileDragAndDropTarget
{
public:
    using FileDragSource::FileDragSource;
    // An audio file dropped here becomes the region to accompany (the rest of the window takes references).
    bool isInterestedInFileDrag (const juce::StringArray& files) override;
    void filesDropped (const juce::StringArray& files, int, int) override;
    void paint (juce::Graphics&) override;

private:
    juce::String fileToDrag() const override { return processor.getStemPath(); }
};

// "drag MIDI": the playing take's transcription, dragged into the DAW as a MIDI clip.
class MidiDragButton : public FileDragSource
{
public:
    using FileDragSource::FileDragSource;
    void paint (juce::Graphics&) override;

private:
    juce::String fileToDrag() const override { return processor.getMidiPath(); }
};

// The style pad: the engine's named sounds for the instrument, placed on a plane; click or drag to put the style
// there (it stands for the words until Use words is pressed).
class StylePadView : public juce::Component
{
public:
    explicit StylePadView (BacklineProcessor& p) : processor (p) {}
    void paint (juce::Graphics&) override;
    void mouseDown (const juce::MouseEvent& e) override;
    void mouseDrag (const juce::MouseEvent& e) override { place (e.position); }
    void mouseUp (const juce::MouseEvent&) override;

private:
    void place (juce::Point<float>);
    juce::Point<float> toScreen (float x, float y) const;
    BacklineProcessor& processor;
};

class BacklineEditor : public juce::AudioProcessorEditor, public juce::FileDragAndDropTarget, private juce::Timer
{
public:
    explicit BacklineEditor (BacklineProcessor&);
    void paint (juce::Graphics&) override;
    void resized() override;
    // Drop an audio file anywhere on the window: it becomes the style reference.
    bool isInterestedInFileDrag (const juce::StringArray& files) override;
    void filesDropped (const juce::StringArray& files, int x, int y) override;

private:
    void timerCallback() override;

    BacklineProcessor& processor;
    juce::Label title, instrumentLabel, seedLabel, stepsLabel, bassTakesLabel, promptLabel, chordsLabel, takeLabel, statusLabel;
    juce::Label actionLabel, variationLabel, barsLabel, blendLabel, loopLabel, widthLabel, beatLockLabel, chordLockLabel;
    juce::TextEditor promptEditor, chordsEditor;
    juce::Label referenceLabel;
    juce::TextButton clearReferenceButton { "Clear" };
    juce::ComboBox instrumentBox, actionBox;
    juce::Slider seedSlider, stepsSlider, bassTakesSlider, takeSlider, variationSlider, fromBarSlider, toBarSlider, blendSlider,
                 loopSlider, widthSlider, beatLockSlider, chordLockSlider;
    juce::ToggleButton midiButton { "MIDI too" }, fastDraftButton { "Fast draft" };
    juce::ToggleButton recordButton { "Record while playing" }, passButton { "Pass input through" };
    // The main page holds what a producer decides; seed, steps, bass takes, the beat and chord locks and a fast draft
    // appear under Advanced.
    juce::ToggleButton advancedButton { "Advanced" };
    juce::TextButton generateButton { "Generate" }, cancelButton { "Cancel" };
    double progressValue = 0.0;
    juce::ProgressBar progressBar { progressValue };
    StemView stemView;
    MidiDragButton midiDrag;
    StylePadView stylePad;
    juce::TextButton useWordsButton { "Use words" };
    juce::ComboBoxParameterAttachment instrumentAttachment, actionAttachment;
    juce::SliderParameterAttachment seedAttachment, stepsAttachment, bassTakesAttachment, takeAttachment, variationAttachment,
                                    fromBarAttachment, toBarAttachment, blendAttachment, loopAttachment, widthAttachment,
                                    beatLockAttachment, chordLockAttachment;
    juce::ButtonParameterAttachment recordAttachment, passAttachment, midiAttachment, fastDraftAttachment;

    JUCE_DECLARE_NON_COPYABLE_WITH_LEAK_DETECTOR (BacklineEditor)
};
