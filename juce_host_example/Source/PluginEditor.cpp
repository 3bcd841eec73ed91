#include "PluginEditor.h"

void StemView::paint (juce::Graphics& g)
{
    g.fillAll (juce::Colour (0xff1d2128));
    g.setColour (juce::Colour (0xff3a4150));
    g.drawRect (getLocalBounds());
    const auto peaks = processor.getStemPeaks();
    if (peaks.empty())
    {
        g.setColour (juce::Colours::grey);
        g.drawFittedText ("The stem appears here: drag it into your DAW. Drop an audio file here to use it as the region.", getLocalBounds().reduced (8),
                          juce::Justification::centred, 2);
        return;
    }
    g.setColour (juce::Colour (0xff6fc3df));
    const float mid = (float) getHeight() * 0.5f, width = (float) getWidth();
    for (size_t i = 0; i < peaks.size(); ++i)
    {
        const float x = width * (float) i / (float) peaks.size();
        const float h = juce::jmin (1.0f, peaks[i]) * mid;
        g.drawVerticalLine ((int) x, mid - h, mid + h);
    }
    g.setColour (juce::Colours::white.withAlpha (0.7f));
    g.drawText ("drag me", getLocalBounds().reduced (6), juce::Justification::bottomRight);
}

void StemView::mouseDrag (const juce::MouseEvent&)
{
    const juce::File file (processor.getStemPath());
    if (dragging || ! file.existsAsFile())
        return;
    dragging = true;
    // The file lives in a permanent folder (some DAWs reference it instead of copying).
    juce::DragAndDropContainer::performExternalDragDropOfFiles ({ file.getFullPathName() }, false, this,
                                                                [this] { dragging = false; });
}

BacklineEditor::BacklineEditor (BacklineProcessor& p)
    : AudioProcessorEditor (&p), processor (p), stemView (p),
      instrumentAttachment (*p.instrument, instrumentBox),
      seedAttachment (*p.seed, seedSlider),
      stepsAttachment (*p.steps, stepsSlider),
      takeAttachment (*p.take, takeSlider),
      recordAttachment (*p.record, recordButton),
      passAttachment (*p.passInput, passButton)
{
    title.setText ("Backline", juce::dontSendNotification);
    title.setFont (juce::Font (22.0f, juce::Font::bold));
    instrumentLabel.setText ("Instrument", juce::dontSendNotification);
    seedLabel.setText ("Seed", juce::dontSendNotification);
    stepsLabel.setText ("Steps", juce::dontSendNotification);
    takeLabel.setText ("Take", juce::dontSendNotification);
    promptLabel.setText ("Style", juce::dontSendNotification);
    promptEditor.setTextToShowWhenEmpty ("a prompt, e.g. \"fretless bass\" (optional)", juce::Colours::grey);
    promptEditor.setText (p.getPrompt(), juce::dontSendNotification);
    promptEditor.onTextChange = [this] { processor.setPrompt (promptEditor.getText()); };
    chordsLabel.setText ("Chords", juce::dontSendNotification);
    chordsEditor.setTextToShowWhenEmpty ("e.g. Am F C G7, a chord a bar (optional: else heard in the song)",
                                         juce::Colours::grey);
    chordsEditor.setText (p.getChords(), juce::dontSendNotification);
    chordsEditor.onTextChange = [this] { processor.setChords (chordsEditor.getText()); };
    referenceLabel.setColour (juce::Label::outlineColourId, juce::Colours::grey);
    clearReferenceButton.onClick = [this] { processor.clearStyleReference(); };
    statusLabel.setJustificationType (juce::Justification::topLeft);
    statusLabel.setMinimumHorizontalScale (1.0f);
    for (auto* slider : { &seedSlider, &stepsSlider, &takeSlider })
        slider->setTextBoxStyle (juce::Slider::TextBoxRight, false, 70, 22);
    instrumentBox.addItemList (p.instrument->choices, 1);
    instrumentAttachment.sendInitialUpdate();   // the items exist only now
    advancedButton.onClick = [this] { resized(); };
    generateButton.onClick = [this] { processor.requestGenerate(); };
    cancelButton.onClick = [this] { processor.requestCancel(); };
    for (auto* c : std::initializer_list<juce::Component*> { &title, &instrumentLabel, &seedLabel, &stepsLabel, &takeLabel, &takeSlider, &promptLabel, &promptEditor, &chordsLabel, &chordsEditor, &referenceLabel, &clearReferenceButton, &statusLabel,
                                                             &instrumentBox, &seedSlider, &stepsSlider, &recordButton, &passButton,
                                                             &generateButton, &cancelButton, &progressBar, &stemView,
                                                             &advancedButton })
        addAndMakeVisible (c);
    setResizable (true, true);
    setResizeLimits (420, 504, 1600, 1200);
    setSize (560, 574);
    startTimerHz (10);
}

void BacklineEditor::paint (juce::Graphics& g) { g.fillAll (juce::Colour (0xff262b33)); }

void BacklineEditor::resized()
{
    auto area = getLocalBounds().reduced (12);
    auto top = area.removeFromTop (30);
    advancedButton.setBounds (top.removeFromRight (110));
    title.setBounds (top);
    const auto row = [&area] { auto r = area.removeFromTop (28); area.removeFromTop (6); return r; };
    const auto labelled = [&row] (juce::Component& label, juce::Component& control)   // a row: label, then control
    {
        auto r = row();
        label.setBounds (r.removeFromLeft (90));
        control.setBounds (r);
    };
    auto r = row();
    instrumentLabel.setBounds (r.removeFromLeft (90));
    instrumentBox.setBounds (r.removeFromLeft (140));
    const bool advanced = advancedButton.getToggleState();
    for (auto* c : std::initializer_list<juce::Component*> { &seedLabel, &seedSlider, &stepsLabel, &stepsSlider })
        c->setVisible (advanced);
    if (advanced)
    {
        labelled (seedLabel, seedSlider);
        labelled (stepsLabel, stepsSlider);
    }
    labelled (takeLabel, takeSlider);
    labelled (promptLabel, promptEditor);
    r = row();
    r.removeFromLeft (90);
    clearReferenceButton.setBounds (r.removeFromRight (70));
    r.removeFromRight (8);
    referenceLabel.setBounds (r);
    labelled (chordsLabel, chordsEditor);
    r = row();
    recordButton.setBounds (r.removeFromLeft (r.getWidth() / 2));
    passButton.setBounds (r);
    r = row();
    generateButton.setBounds (r.removeFromLeft (120));
    r.removeFromLeft (8);
    cancelButton.setBounds (r.removeFromLeft (90));
    r.removeFromLeft (8);
    progressBar.setBounds (r);
    statusLabel.setBounds (area.removeFromTop (48));
    stemView.setBounds (area);
}

bool StemView::isInterestedInFileDrag (const juce::StringArray& files)
{
    return files.size() == 1 && juce::File (files[0]).hasFileExtension ("wav;wave;aif;aiff");
}

void StemView::filesDropped (const juce::StringArray& files, int, int)
{
    if (! files.isEmpty())
        processor.setRegionFromFile (juce::File (files[0]));
}

bool BacklineEditor::isInterestedInFileDrag (const juce::StringArray& files)
{
    return files.size() == 1 && juce::File (files[0]).hasFileExtension ("wav;wave;aif;aiff");
}

void BacklineEditor::filesDropped (const juce::StringArray& files, int, int)
{
    if (! files.isEmpty())
        processor.setStyleReference (juce::File (files[0]));
}

void BacklineEditor::timerCallback()
{
    const auto reference = processor.getStyleReference();
    referenceLabel.setText (reference != nullptr ? "Style reference: " + juce::File (reference->path).getFileName()
                                                 : juce::String ("Drop a reference recording (WAV, AIFF) for the style"),
                            juce::dontSendNotification);
    clearReferenceButton.setEnabled (reference != nullptr);
    const auto takeCount = (int) processor.getTakes().size();
    takeLabel.setText (takeCount > 1 ? "Take (" + juce::String (takeCount) + ")" : juce::String ("Take"), juce::dontSendNotification);
    progressValue = processor.progress->get();
    statusLabel.setText (processor.getStatusMessage(), juce::dontSendNotification);
    stemView.repaint();
}
