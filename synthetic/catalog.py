"""The syllabus the synthetic PrepIQ source is written from: subjects, their topics and
each topic's vocabulary, plus question templates. Texts are composed from a topic's own
terms so that a text model can tell topics apart, as it can on real past papers."""

from __future__ import annotations

from typing import NamedTuple


class TopicSpec(NamedTuple):
    name: str
    terms: tuple[str, ...]


class SubjectSpec(NamedTuple):
    code: str
    name: str
    topics: tuple[TopicSpec, ...]


def _t(name: str, terms: str) -> TopicSpec:
    return TopicSpec(name, tuple(term.strip() for term in terms.split(",")))


SUBJECTS: tuple[SubjectSpec, ...] = (
    SubjectSpec(
        "MATH",
        "Mathematics",
        (
            _t(
                "Algebraic expressions",
                "expansion, factorisation, like terms, binomial, identity, coefficient, bracket",
            ),
            _t(
                "Linear equations",
                "unknown, gradient, intercept, simultaneous equations, substitution, elimination, straight line",
            ),
            _t(
                "Quadratic equations",
                "discriminant, roots, completing the square, parabola, vertex, quadratic formula, turning point",
            ),
            _t(
                "Functions and graphs",
                "domain, range, inverse function, composite function, asymptote, transformation, mapping",
            ),
            _t(
                "Sequences and series",
                "arithmetic progression, geometric progression, common ratio, nth term, sum to infinity, recurrence, sigma notation",
            ),
            _t(
                "Trigonometry",
                "sine rule, cosine rule, radian, identity, angle of elevation, bearing, unit circle",
            ),
            _t(
                "Coordinate geometry",
                "midpoint, distance formula, circle equation, tangent line, perpendicular bisector, locus, chord",
            ),
            _t(
                "Differentiation",
                "derivative, chain rule, product rule, stationary point, rate of change, maximum, tangent gradient",
            ),
            _t(
                "Integration",
                "antiderivative, definite integral, area under curve, substitution method, integration by parts, limits of integration, volume of revolution",
            ),
            _t(
                "Probability",
                "sample space, independent events, conditional probability, tree diagram, mutually exclusive, expected value, venn diagram",
            ),
            _t(
                "Statistics",
                "mean, median, standard deviation, histogram, quartile, correlation, frequency table",
            ),
            _t(
                "Vectors",
                "magnitude, unit vector, scalar product, position vector, collinear, resultant, direction",
            ),
            _t(
                "Matrices",
                "determinant, inverse matrix, transpose, identity matrix, eigenvalue, matrix multiplication, linear transformation",
            ),
            _t(
                "Logarithms and exponentials",
                "logarithm, base, exponential growth, natural log, half-life model, laws of logarithms, exponential decay",
            ),
        ),
    ),
    SubjectSpec(
        "PHYS",
        "Physics",
        (
            _t(
                "Kinematics",
                "velocity, acceleration, displacement, projectile, uniform motion, free fall, velocity-time graph",
            ),
            _t(
                "Forces and Newton's laws",
                "resultant force, friction, mass, inertia, tension, free-body diagram, equilibrium",
            ),
            _t(
                "Work, energy and power",
                "kinetic energy, potential energy, efficiency, work done, conservation of energy, watt, joule",
            ),
            _t(
                "Momentum",
                "impulse, collision, conservation of momentum, elastic, inelastic, recoil, impact force",
            ),
            _t(
                "Circular motion and gravitation",
                "centripetal force, angular velocity, orbit, gravitational field, satellite, period of revolution, escape velocity",
            ),
            _t(
                "Oscillations",
                "simple harmonic motion, amplitude, pendulum, frequency, resonance, damping, spring constant",
            ),
            _t(
                "Waves",
                "wavelength, interference, diffraction, standing wave, superposition, refraction, wave speed",
            ),
            _t(
                "Thermal physics",
                "specific heat capacity, latent heat, ideal gas, temperature, internal energy, thermal equilibrium, pressure law",
            ),
            _t(
                "Electric circuits",
                "current, potential difference, resistance, ohm's law, series circuit, parallel circuit, internal resistance",
            ),
            _t(
                "Electric fields",
                "charge, coulomb's law, field strength, capacitor, potential, permittivity, electric field lines",
            ),
            _t(
                "Magnetism and induction",
                "magnetic flux, faraday's law, lenz's law, solenoid, induced emf, transformer, magnetic field",
            ),
            _t(
                "Atomic and nuclear physics",
                "radioactive decay, half-life, nucleus, isotope, alpha particle, binding energy, fission",
            ),
            _t(
                "Quantum physics",
                "photon, photoelectric effect, work function, energy level, de broglie wavelength, planck constant, emission spectrum",
            ),
        ),
    ),
    SubjectSpec(
        "CHEM",
        "Chemistry",
        (
            _t(
                "Atomic structure",
                "electron configuration, proton, neutron, orbital, ionisation energy, isotope, mass number",
            ),
            _t(
                "Chemical bonding",
                "covalent bond, ionic bond, metallic bond, electronegativity, lattice, lone pair, polarity",
            ),
            _t(
                "Stoichiometry and the mole",
                "mole, molar mass, avogadro constant, limiting reagent, percentage yield, empirical formula, concentration",
            ),
            _t(
                "Energetics",
                "enthalpy change, exothermic, endothermic, hess's law, bond enthalpy, calorimetry, activation energy",
            ),
            _t(
                "Reaction kinetics",
                "rate of reaction, catalyst, rate constant, collision theory, order of reaction, maxwell-boltzmann distribution, rate equation",
            ),
            _t(
                "Chemical equilibrium",
                "le chatelier's principle, equilibrium constant, dynamic equilibrium, reversible reaction, position of equilibrium, kc expression, haber process",
            ),
            _t(
                "Acids and bases",
                "ph, buffer solution, titration, neutralisation, strong acid, weak base, indicator",
            ),
            _t(
                "Redox and electrochemistry",
                "oxidation state, reduction, electrode potential, electrolysis, half-equation, electrochemical cell, oxidising agent",
            ),
            _t(
                "The periodic table",
                "group, period, trend, halogen, alkali metal, atomic radius, transition element",
            ),
            _t(
                "Organic chemistry: hydrocarbons",
                "alkane, alkene, homologous series, isomer, addition reaction, combustion, cracking",
            ),
            _t(
                "Organic chemistry: functional groups",
                "alcohol, carboxylic acid, ester, aldehyde, ketone, oxidation of alcohols, functional group",
            ),
            _t(
                "Polymers",
                "addition polymer, condensation polymer, monomer, polyester, polyamide, biodegradable, repeating unit",
            ),
            _t(
                "Analytical techniques",
                "mass spectrometry, infrared spectroscopy, chromatography, nmr spectrum, retention factor, molecular ion peak, flame test",
            ),
            _t(
                "Transition metals",
                "complex ion, ligand, coordination number, oxidation states, coloured compounds, variable valency, catalyst surface",
            ),
            _t(
                "Thermodynamics and entropy",
                "entropy, gibbs free energy, feasibility, spontaneous reaction, entropy change, lattice enthalpy, born-haber cycle",
            ),
        ),
    ),
    SubjectSpec(
        "BIO",
        "Biology",
        (
            _t(
                "Cell structure",
                "organelle, nucleus, mitochondria, ribosome, cell membrane, prokaryote, eukaryote",
            ),
            _t(
                "Biological molecules",
                "carbohydrate, protein, lipid, enzyme, amino acid, glucose, peptide bond",
            ),
            _t(
                "Enzymes",
                "active site, substrate, denaturation, inhibitor, optimum temperature, lock and key, induced fit",
            ),
            _t(
                "Cell transport",
                "diffusion, osmosis, active transport, water potential, concentration gradient, facilitated diffusion, endocytosis",
            ),
            _t(
                "Cell division",
                "mitosis, meiosis, chromosome, cell cycle, chromatid, spindle, cytokinesis",
            ),
            _t(
                "Genetics and inheritance",
                "allele, genotype, phenotype, dominant, recessive, punnett square, monohybrid cross",
            ),
            _t(
                "DNA and protein synthesis",
                "transcription, translation, codon, messenger rna, replication, nucleotide, base pairing",
            ),
            _t(
                "Photosynthesis",
                "chlorophyll, light-dependent reaction, calvin cycle, chloroplast, limiting factor, carbon dioxide fixation, glucose production",
            ),
            _t(
                "Respiration",
                "aerobic respiration, anaerobic respiration, atp, glycolysis, krebs cycle, oxidative phosphorylation, lactate",
            ),
            _t(
                "Gas exchange and circulation",
                "alveoli, haemoglobin, heart, capillary, blood pressure, cardiac cycle, ventilation",
            ),
            _t(
                "Homeostasis",
                "negative feedback, insulin, blood glucose, thermoregulation, kidney, osmoregulation, hormone",
            ),
            _t(
                "Nervous system",
                "neurone, synapse, action potential, reflex arc, neurotransmitter, myelin sheath, stimulus",
            ),
            _t(
                "Immunity and disease",
                "pathogen, antibody, antigen, vaccination, lymphocyte, phagocyte, immune response",
            ),
            _t(
                "Ecology",
                "ecosystem, food web, population, biodiversity, nutrient cycle, niche, succession",
            ),
            _t(
                "Evolution and classification",
                "natural selection, adaptation, speciation, mutation, taxonomy, variation, selection pressure",
            ),
            _t(
                "Plant transport",
                "xylem, phloem, transpiration, stomata, translocation, root hair, cohesion-tension",
            ),
        ),
    ),
)

# Question stems. {a}, {b} and {c} are terms of the question's topic; {topic} its name.
TEMPLATES: tuple[str, ...] = (
    "Define {a} and explain its role in {topic}.",
    "Explain how {a} is related to {b}, using an example.",
    "Calculate the {a} in a situation involving {b} and {c}.",
    "Describe an experiment to investigate {a}, stating how {b} is controlled.",
    "Compare {a} with {b}, giving one similarity and one difference.",
    "State two factors that affect {a} and explain the effect of {b}.",
    "A student claims that {a} always increases {b}. Evaluate this claim.",
    "Sketch and label a diagram showing {a} and {b}.",
    "Use the data provided to determine {a}, then comment on {c}.",
    "Explain why {a} is important when considering {b} in {topic}.",
    "Derive an expression for {a} in terms of {b}.",
    "Outline the steps needed to find {a} when {b} is known.",
    "Suggest a reason for the change in {a} when {b} is altered.",
    "Show that {a} is consistent with {b} and {c}.",
)
