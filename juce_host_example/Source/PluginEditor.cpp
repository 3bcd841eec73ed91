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

void FileDragSource::mouseDrag (const juce::MouseEvent&)
{
    const juce::File file (fileToDrag());
    if (dragging || ! file.existsAsFile())
        return;
    dragging = true;
    // The file lives in a permanent folder (some DAWs reference it instead of copying).
    juce::DragAndDropContainer::performExternalDragDropOfFiles ({ file.getFullPathName() }, false, this,
                                                                [this] { dragging = false; });
}

void MidiDragButton::paint (juce::Graphics& g)
{
    const bool ready = juce::File (processor.getMidiPath()).existsAsFile();
    g.setColour (juce::Colour (ready ? 0xff3a4150 : 0xff2a2f38));
    g.fillRoundedRectangle (getLocalBounds().toFloat(), 4.0f);
    g.setColour (juce::Colours::white.withAlpha (ready ? 0.9f : 0.35f));
    g.drawText ("drag MIDI", getLocalBounds(), juce::Justification::centred);
}

juce::Point<float> StylePadView::toScreen (float x, float y) const
{
    const auto area = getLocalBounds().toFloat().reduced (10.0f);
    return { area.getCentreX() + x * area.getWidth() * 0.5f, area.getCentreY() - y * area.getHeight() * 0.5f };
}

void StylePadView::paint (juce::Graphics& g)
{
    g.fillAll (juce::Colour (0xff1d2128));
    g.setColour (juce::Colour (0xff3a4150));
    g.drawRect (getLocalBounds());
    const auto sounds = processor.getStylePads().getProperty (processor.instrument->getCurrentChoiceName(), {});
    g.setFont (11.0f);
    if (! sounds.isArray() || sounds.size() == 0)
    {
        g.setColour (juce::Colours::grey);
        g.drawFittedText ("Style pad: its sounds appear once the engine runs", getLocalBounds().reduced (8),
                          juce::Justification::centred, 3);
        return;
    }
    for (const auto& sound : *sounds.getArray())
    {
        const auto at = toScreen ((float) (double) sound.getProperty ("x", 0.0), (float) (double) sound.getProperty ("y", 0.0));
        g.setColour (juce::Colour (0xff6fc3df));
        g.fillEllipse (at.x - 3.0f, at.y - 3.0f, 6.0f, 6.0f);
        g.setColour (juce::Colours::white.withAlpha (0.75f));
        const auto label = juce::Rectangle<float> (at.x - 60.0f, at.y + 3.0f, 120.0f, 14.0f)
                               .constrainedWithin (getLocalBounds().toFloat().reduced (2.0f));   // names stay inside
        g.drawText (sound.getProperty ("name", "").toString(), label, juce::Justification::centred);
    }
    const bool on = processor.padOn->get();
    const auto point = toScreen (processor.padX->get(), processor.padY->get());
    g.setColour (on ? juce::Colour (0xfff2b84b) : juce::Colours::grey);
    g.drawEllipse (point.x - 7.0f, point.y - 7.0f, 14.0f, 14.0f, 2.0f);
}

void StylePadView::place (juce::Point<float> at)
{
    const auto area = getLocalBounds().toFloat().reduced (10.0f);
    const auto set = [] (juce::AudioParameterFloat& p, float v) { p.setValueNotifyingHost (p.convertTo0to1 (juce::jlimit (-1.0f, 1.0f, v))); };
    set (*processor.padX, (at.x - area.getCentreX()) / (area.getWidth() * 0.5f));
    set (*processor.padY, (area.getCentreY() - at.y) / (area.getHeight() * 0.5f));
    repaint();
}

void StylePadView::mouseDown (const juce::MouseEvent& e)
{
    for (auto* p : std::initializer_list<juce::AudioProcessorParameter*> { processor.padOn, processor.padX, processor.padY })
        p->beginChangeGesture();
    processor.padOn->setValueNotifyingHost (1.0f);
    place (e.position);
}

void StylePadView::mouseUp (const juce::MouseEvent&)
{
    for (auto* p : std::initializer_list<juce::AudioProcessorParameter*> { processor.padOn, processor.padX, processor.padY })
        p->endChangeGesture();
}

BacklineEditor::BacklineEditor (BacklineProcessor& p)
    : AudioProcessorEditor (&p), processor (p), stemView (p), midiDrag (p), stylePad (p),
      instrumentAttachment (*p.instrument, instrumentBox),
      actionAttachment (*p.action, actionBox),
      seedAttachment (*p.seed, seedSlider),
      stepsAttachment (*p.steps, stepsSlider),
      bassTakesAttachment (*p.bassTakes, bassTakesSlider),
      takeAttachment (*p.take, takeSlider),
      variationAttachment (*p.variation, variationSlider),
      fromBarAttachment (*p.redoFromBar, fromBarSlider),
      toBarAttachment (*p.redoToBar, toBarSlider),
      blendAttachment (*p.styleBlend, blendSlider),
      loopAttachment (*p.loopBars, loopSlider),
      widthAttachment (*p.stereoWidth, widthSlider),
      beatLockAttachment (*p.cfgTempo, beatLockSlider),
      chordLockAttachment (*p.cfgChords, chordLockSlider),
      recordAttachment (*p.record, recordButton),
      passAttachment (*p.passInput, passButton),
      midiAttachment (*p.midi, midiButton),
      fastDraftAttachment (*p.fastDraft, fastDraftButton)
{
    title.setText ("Backline", juce::dontSendNotification);
    title.setFont (juce::Font (22.0f, juce::Font::bold));
    instrumentLabel.setText ("Instrument", juce::dontSendNotification);
    seedLabel.setText ("Seed", juce::dontSendNotification);
    stepsLabel.setText ("Steps", juce::dontSendNotification);
    bassTakesLabel.setText ("Bass takes", juce::dontSendNotification);
    bassTakesSlider.setTooltip ("How many bass takes to make: the one most in key plays, the others are kept to audition");
    takeLabel.setText ("Take", juce::dontSendNotification);
    actionLabel.setText ("Make", juce::dontSendNotification);
    variationLabel.setText ("How different", juce::dontSendNotification);
    barsLabel.setText ("Bars", juce::dontSendNotification);
    blendLabel.setText ("Blend", juce::dontSendNotification);
    blendSlider.setTooltip ("0: the reference's sound, 1: the words'");
    loopLabel.setText ("Loop bars", juce::dontSendNotification);
    widthLabel.setText ("Width", juce::dontSendNotification);
    fromBarSlider.setTextValueSuffix (" from");
    toBarSlider.setTextValueSuffix (" to");
    loopSlider.textFromValueFunction = [] (double bars) { return bars < 0.5 ? juce::String ("off") : juce::String ((int) bars); };
    stepsSlider.textFromValueFunction = [] (double n) { return n < 0.5 ? juce::String ("model's") : juce::String ((int) n); };
    bassTakesSlider.textFromValueFunction = stepsSlider.textFromValueFunction;
    beatLockLabel.setText ("Beat lock", juce::dontSendNotification);
    chordLockLabel.setText ("Chord lock", juce::dontSendNotification);
    beatLockSlider.setTooltip ("How firmly the stem keeps to the beat (0: the model's own)");
    chordLockSlider.setTooltip ("How firmly the stem follows the chords (0: the model's own)");
    fastDraftButton.setTooltip ("A take in a fraction of the time, from a model distilled for speed (a little less "
                                "tight than the full one; the beat and chord locks do not apply)");
    for (auto* slider : { &beatLockSlider, &chordLockSlider })
        slider->textFromValueFunction = [] (double v) { return v <= 0.0 ? juce::String ("model's") : juce::String (v, 2); };
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
    for (auto* slider : { &seedSlider, &stepsSlider, &bassTakesSlider, &takeSlider, &variationSlider, &fromBarSlider, &toBarSlider,
                          &blendSlider, &loopSlider, &widthSlider, &beatLockSlider, &chordLockSlider })
        slider->setTextBoxStyle (juce::Slider::TextBoxRight, false, 70, 22);
    loopSlider.updateText();
    stepsSlider.updateText();
    bassTakesSlider.updateText();
    beatLockSlider.updateText();
    chordLockSlider.updateText();
    instrumentBox.addItemList (p.instrument->choices, 1);
    instrumentAttachment.sendInitialUpdate();   // the items exist only now
    actionBox.addItemList (p.action->choices, 1);
    actionAttachment.sendInitialUpdate();
    actionBox.onChange = [this] { resized(); };
    advancedButton.onClick = [this] { resized(); };
    useWordsButton.onClick = [this] { processor.padOn->setValueNotifyingHost (0.0f); stylePad.repaint(); };
    useWordsButton.setTooltip ("The style comes from the words (and the reference), not the pad");
    generateButton.onClick = [this] { processor.requestGenerate(); };
    cancelButton.onClick = [this] { processor.requestCancel(); };
    for (auto* c : std::initializer_list<juce::Component*> { &title, &instrumentLabel, &seedLabel, &stepsLabel, &bassTakesLabel, &bassTakesSlider, &takeLabel, &takeSlider, &promptLabel, &promptEditor, &chordsLabel, &chordsEditor, &referenceLabel, &clearReferenceButton, &statusLabel,
                                                             &instrumentBox, &seedSlider, &stepsSlider, &recordButton, &passButton,
                                                             &generateButton, &cancelButton, &progressBar, &stemView,
                                                             &advancedButton, &actionLabel, &actionBox, &variationLabel,
                                                             &variationSlider, &barsLabel, &fromBarSlider, &toBarSlider,
                                                             &blendLabel, &blendSlider, &loopLabel, &loopSlider, &widthLabel,
                                                             &widthSlider, &midiButton, &midiDrag, &stylePad, &useWordsButton,
                                                             &beatLockLabel, &beatLockSlider, &chordLockLabel, &chordLockSlider,
                                                             &fastDraftButton })
        addAndMakeVisible (c);
    setResizable (true, true);
    setResizeLimits (460, 640, 1600, 1400);
    setSize (600, 720);
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
    instrumentBox.setBounds (r.removeFromLeft (120));
    r.removeFromLeft (16);
    actionLabel.setBounds (r.removeFromLeft (50));
    actionBox.setBounds (r.removeFromLeft (140));
    // what a variation or a redo of bars asks, under the choice
    const auto action = actionBox.getSelectedItemIndex();
    for (auto* c : std::initializer_list<juce::Component*> { &variationLabel, &variationSlider })
        c->setVisible (action == 1);
    for (auto* c : std::initializer_list<juce::Component*> { &barsLabel, &fromBarSlider, &toBarSlider })
        c->setVisible (action == 2);
    if (action == 1)
        labelled (variationLabel, variationSlider);
    if (action == 2)
    {
        r = row();
        barsLabel.setBounds (r.removeFromLeft (90));
        fromBarSlider.setBounds (r.removeFromLeft (r.getWidth() / 2));
        toBarSlider.setBounds (r);
    }
    const bool advanced = advancedButton.getToggleState();
    for (auto* c : std::initializer_list<juce::Component*> { &seedLabel, &seedSlider, &stepsLabel, &stepsSlider,
                                                             &bassTakesLabel, &bassTakesSlider, &beatLockLabel, &beatLockSlider, &chordLockLabel, &chordLockSlider,
                                                             &fastDraftButton })
        c->setVisible (advanced);
    if (advanced)
    {
        labelled (seedLabel, seedSlider);
        labelled (stepsLabel, stepsSlider);
        labelled (bassTakesLabel, bassTakesSlider);
        labelled (beatLockLabel, beatLockSlider);
        labelled (chordLockLabel, chordLockSlider);
        auto draft = row();
        draft.removeFromLeft (90);
        fastDraftButton.setBounds (draft);
    }
    labelled (takeLabel, takeSlider);
    labelled (promptLabel, promptEditor);
    r = row();
    r.removeFromLeft (90);
    clearReferenceButton.setBounds (r.removeFromRight (70));
    r.removeFromRight (8);
    referenceLabel.setBounds (r);
    const bool blend = processor.getStyleReference() != nullptr && processor.getPrompt().trim().isNotEmpty();
    blendLabel.setVisible (blend);
    blendSlider.setVisible (blend);
    if (blend)
        labelled (blendLabel, blendSlider);
    labelled (chordsLabel, chordsEditor);
    r = row();
    loopLabel.setBounds (r.removeFromLeft (90));
    loopSlider.setBounds (r.removeFromLeft (r.getWidth() / 2 - 10));
    r.removeFromLeft (10);
    widthLabel.setBounds (r.removeFromLeft (50));
    widthSlider.setBounds (r);
    r = row();
    recordButton.setBounds (r.removeFromLeft (r.getWidth() * 2 / 5));
    passButton.setBounds (r.removeFromLeft (r.getWidth() * 3 / 5));
    midiButton.setBounds (r);
    r = row();
    generateButton.setBounds (r.removeFromLeft (120));
    r.removeFromLeft (8);
    cancelButton.setBounds (r.removeFromLeft (90));
    r.removeFromLeft (8);
    progressBar.setBounds (r);
    statusLabel.setBounds (area.removeFromTop (48));
    auto padArea = area.removeFromRight (juce::jmin (area.getHeight(), area.getWidth() / 2));
    useWordsButton.setBounds (padArea.removeFromBottom (26).removeFromRight (90));
    padArea.removeFromBottom (4);
    stylePad.setBounds (padArea);
    area.removeFromRight (8);
    midiDrag.setBounds (area.removeFromBottom (26).removeFromRight (110));
    area.removeFromBottom (4);
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
    if (const bool blend = reference != nullptr && processor.getPrompt().trim().isNotEmpty(); blend != blendSlider.isVisible())
        resized();   // the blend appears once there is both a reference and words
    midiDrag.repaint();
    stylePad.repaint();
    promptEditor.setAlpha (processor.padOn->get() ? 0.5f : 1.0f);   // the pad stands for the words
    useWordsButton.setEnabled (processor.padOn->get());
    const auto takeCount = (int) processor.getTakes().size();
    takeLabel.setText (takeCount > 1 ? "Take (" + juce::String (takeCount) + ")" : juce::String ("Take"), juce::dontSendNotification);
    progressValue = processor.progress->get();
    statusLabel.setText (processor.getStatusMessage(), juce::dontSendNotification);
    stemView.repaint();
}
